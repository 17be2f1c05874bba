"""The job platform: one lifecycle and one registry for every training job (tokenizers, world models,
next: post-training and RL experiments).

* :mod:`.progress` -- ``progress.json`` written by the workers, cancel markers;
* :mod:`.records` -- the request and record fields every job shares;
* :mod:`.registry` -- records and frozen plans in the object store, generic over the record type;
* :mod:`.manager` -- submit/plan/run/finish/cancel/resume with :class:`JobHooks` for what differs;
* :mod:`.launch` -- a job's :class:`WorkerSpec` and the launchers that run it (:class:`LocalLauncher`
  here; :mod:`.rayjob` as a KubeRay RayJob through the ``kubernetes`` client).
"""

from worldloom.core.jobs.launch import LaunchCancelled, Launcher, LocalLauncher, WorkerSpec
from worldloom.core.jobs.manager import JobHooks, JobManager, JobRefused
from worldloom.core.jobs.progress import (
    TERMINAL_STATES,
    JobState,
    Progress,
    ProgressWriter,
    read_progress,
    request_cancel,
    store_settings_payload,
)
from worldloom.core.jobs.records import DataLineage, JobRecord, JobRequest, dataclass_defaults
from worldloom.core.jobs.registry import JobNotFound, JobRegistry, valid_job_id

__all__ = [
    "TERMINAL_STATES",
    "DataLineage",
    "JobHooks",
    "JobManager",
    "JobNotFound",
    "JobRecord",
    "JobRefused",
    "JobRegistry",
    "JobRequest",
    "JobState",
    "LaunchCancelled",
    "Launcher",
    "LocalLauncher",
    "Progress",
    "ProgressWriter",
    "WorkerSpec",
    "read_progress",
    "request_cancel",
    "store_settings_payload",
    "dataclass_defaults",
    "valid_job_id",
]
