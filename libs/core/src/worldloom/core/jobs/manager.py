"""One job lifecycle for every training service: submit -> plan -> run -> finish, cancel, resume, close.

* **submit** checks the request against the deployment's :class:`TrainingResources` and asks the service
  to **plan** it (:meth:`JobHooks.plan`: validate, select the data, size the model; a :class:`Refusal`
  is a 4xx before anything runs). The plan -- the exact inputs -- is written first, then the record.
* **run** happens on a background thread (one job at a time per replica: the Ray workers are the
  parallelism); :meth:`JobHooks.worker` describes the workers from the frozen plan and the deployment's
  :class:`~worldloom.core.jobs.launch.Launcher` runs them (from this process, or as a KubeRay RayJob)
  and returns when they end.
* **finish**: the workers wrote the model files and ``progress.json``; the record becomes ``succeeded``
  (model URI, metrics) only if the model file exists, and then :meth:`JobHooks.announce` publishes
  (the ``*.trained`` event, an activation); ``announced`` is recorded after it. Outputs, then the
  record, then the event.
* **cancel** writes the marker the workers poll (a queued job is cancelled at once) and asks the
  launcher to stop the workers (a RayJob is deleted).
* **resume** at start-up: jobs left queued/running are run again from their plan (the workers resume
  from their last checkpoint; a launcher re-attaches to workers still running, e.g. the job's RayJob);
  a job whose workers had already finished is only finished; a succeeded job whose announcement never
  went out is announced again (handlers of the event are idempotent on the job id).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from worldloom.core.catalog import cancel_key
from worldloom.core.errors import Refusal
from worldloom.core.jobs.launch import LaunchCancelled, Launcher, WorkerSpec
from worldloom.core.jobs.progress import TERMINAL_STATES, JobState, read_progress, request_cancel
from worldloom.core.jobs.records import JobRecord, JobRequest
from worldloom.core.jobs.registry import JobRegistry
from worldloom.core.settings import TrainingResources
from worldloom.core.store.base import ObjectStore

log = logging.getLogger("worldloom.core.jobs")

R = TypeVar("R", bound=JobRecord)
Q = TypeVar("Q", bound=JobRequest, contravariant=True)


class JobRefused(Refusal):
    """A training request the deployment does not allow (workers, GPU, steps)."""


class JobHooks(Protocol[R, Q]):
    """What a service adds to the lifecycle for its kind of job."""

    #: job ids are ``<id_prefix>-<12 hex>``
    id_prefix: str

    def plan(self, job_id: str, request: Q) -> tuple[R, dict[str, Any]]:
        """The new record (state ``queued``) and the plan: everything :meth:`run` needs, as JSON (no
        secrets). Raise a :class:`Refusal` for anything wrong with the request or its data."""

    def worker(self, record: R, plan: dict[str, Any]) -> WorkerSpec:
        """The job's workers: the per-worker loop, the plan it gets, worker count and GPUs."""

    def model_key(self, job_id: str) -> str:
        """The object key whose presence means the job produced its model."""

    def announce(self, record: R) -> None:
        """After the record says ``succeeded``: publish the event (and anything else that makes the
        result usable). Must be safe to call again for the same record."""


class JobManager(Generic[R, Q]):
    def __init__(self, store: ObjectStore, registry: JobRegistry[R], hooks: JobHooks[R, Q],
                 resources: TrainingResources, *, launcher: Launcher, announce_attempts: int = 4,
                 announce_backoff_s: float = 1.0, owns: Callable[[R], bool] | None = None) -> None:
        """``owns``: which records of the registry are this service's jobs, when services share one
        (pretraining and post-training both write world models): the others are never resumed here."""
        self.store, self.registry, self.hooks, self.resources = store, registry, hooks, resources
        self.owns = owns
        self.launcher = launcher
        self.announce_attempts, self.announce_backoff_s = max(1, announce_attempts), announce_backoff_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{registry.root}-job")
        self._running: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ submit

    def check_resources(self, req: JobRequest) -> None:
        lim = self.resources
        if req.workers > lim.max_workers:
            raise JobRefused(422, "too_many_workers", f"{req.workers} workers; the limit is {lim.max_workers}")
        if req.use_gpu and not lim.allow_gpu:
            raise JobRefused(422, "gpu_not_allowed", "this deployment does not run GPU jobs")
        if req.steps > lim.max_steps:
            raise JobRefused(422, "too_many_steps", f"{req.steps} steps; the limit is {lim.max_steps}")

    def create(self, req: Q) -> R:
        self.check_resources(req)
        job_id = f"{self.hooks.id_prefix}-{uuid.uuid4().hex[:12]}"
        record, plan = self.hooks.plan(job_id, req)
        self.registry.save_plan(job_id, plan)  # inputs first: a visible record always has its plan
        self.registry.save(record)
        self._submit(job_id)
        return self.registry.get(job_id)

    def _submit(self, job_id: str) -> None:
        with self._lock:
            self._running.add(job_id)
        self._executor.submit(self._run, job_id)

    def is_running(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._running

    # --------------------------------------------------------------------------------------------- run

    def _run(self, job_id: str) -> None:
        try:
            if self.store.exists(cancel_key(self.registry.prefix(job_id))):
                self.registry.update(job_id, state="cancelled")
                return
            plan = self.registry.plan(job_id)
            if plan is None:
                raise RuntimeError("the job has no plan.json (submitted by an older version); submit it again")
            progress = read_progress(self.store, self.registry.prefix(job_id))
            if not (progress and progress.state == "succeeded" and self.store.exists(self.hooks.model_key(job_id))):
                self.launcher.run(self.hooks.worker(self.registry.raw(job_id), plan), self._reporter(job_id))
            self._finish(job_id)
        except LaunchCancelled as exc:
            log.info("%s job %s was stopped: %s", self.registry.kind, job_id, exc)
            self.registry.update(job_id, state="cancelled", error=str(exc) or None)
        except Exception as exc:  # recorded on the job; the service stays up
            log.exception("%s job %s failed", self.registry.kind, job_id)
            self.registry.update(job_id, state="failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running.discard(job_id)

    def _reporter(self, job_id: str):
        """What the launcher sees before the end (queued while a RayJob's cluster comes up, running)."""

        def report(state: JobState, detail: str | None) -> None:
            if self.registry.raw(job_id).state not in (state, *TERMINAL_STATES):
                self.registry.update(job_id, state=state)
                log.info("%s job %s is %s%s", self.registry.kind, job_id, state, f" ({detail})" if detail else "")

        return report

    def _finish(self, job_id: str) -> None:
        progress = read_progress(self.store, self.registry.prefix(job_id))
        if progress is not None and progress.state == "cancelled":
            self.registry.update(job_id, state="cancelled")
            return
        key = self.hooks.model_key(job_id)
        if not self.store.exists(key):
            self.registry.update(job_id, state="failed", error="training ended without a model")
            return
        record = self.registry.update(job_id, state="succeeded", model_uri=self.store.uri(key),
                                      metrics=progress.metrics if progress else {})
        self._announce(record)

    def _announce(self, record: R) -> bool:
        """Publish with a few retries; a job that could not be announced stays ``announced=False`` (it is
        succeeded all the same) and the next start announces it."""
        delay = self.announce_backoff_s
        for attempt in range(1, self.announce_attempts + 1):
            try:
                self.hooks.announce(record)
            except Exception:  # e.g. the bus is down
                log.warning("announcing %s %s failed (attempt %d of %d)", self.registry.kind, record.job_id, attempt,
                            self.announce_attempts, exc_info=True)
                if attempt < self.announce_attempts:
                    time.sleep(delay)
                    delay *= 2
                continue
            self.registry.update(record.job_id, announced=True)
            return True
        return False

    # ---------------------------------------------------------------------------------- cancel, resume

    def cancel(self, job_id: str) -> R:
        record = self.registry.get(job_id)
        if record.state in TERMINAL_STATES:
            raise JobRefused(409, "job_finished", f"{self.registry.kind} {job_id} is already {record.state}")
        request_cancel(self.store, self.registry.prefix(job_id))
        if record.state == "queued" and not self.is_running(job_id):
            self.registry.update(job_id, state="cancelled")
        try:
            self.launcher.cancel(job_id)
        except Exception:  # the marker written above still stops the workers
            log.warning("the launcher could not stop %s %s; its workers stop at the cancel marker",
                        self.registry.kind, job_id, exc_info=True)
        return self.registry.get(job_id)

    def resume_unfinished(self) -> list[str]:
        """Run again the jobs a previous process left queued or running (from their frozen plans), and
        announce finished jobs whose announcement did not go out. Returns the ids resumed."""
        resumed = []
        for job_id in self.registry.ids():
            try:
                record = self.registry.raw(job_id)
            except Refusal:
                continue
            if self.owns is not None and not self.owns(record):
                continue
            if record.state == "succeeded" and not record.announced:
                self._announce(record)
            elif record.state in ("queued", "running") and not self.is_running(job_id):
                self._submit(job_id)
                resumed.append(job_id)
        return resumed

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
