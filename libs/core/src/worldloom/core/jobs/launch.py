"""How a job's workers are started: a :class:`WorkerSpec` (what to run) and a :class:`Launcher` (where).

The job platform stays generic: a service's :class:`~worldloom.core.jobs.JobHooks` describes its workers
(the per-worker loop as ``module:function``, the frozen plan, worker count, GPUs) and the deployment's
launcher runs them:

* :class:`LocalLauncher` -- this process drives the workers (a private local Ray, an existing Ray
  cluster at ``ray_address``, or in-process); the runner is the models library's, given by the service;
* :class:`~worldloom.core.jobs.rayjob.RayJobLauncher` -- the job becomes its own KubeRay ``RayJob``
  whose entrypoint reads the plan back from the object store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from worldloom.core.jobs.progress import JobState


@dataclass(frozen=True)
class WorkerSpec:
    """A job's workers, for any launcher. ``config`` is the frozen plan, without credentials: a local
    runner adds the store settings, a remote entrypoint reads them from its environment."""

    job_id: str
    loop: str  # "package.module:function", called with the config dict on every worker
    config: dict[str, Any] = field(repr=False)
    plan_key: str  # where the frozen plan lies in the object store (a remote entrypoint reads it there)
    workers: int = 1
    use_gpu: bool = False

    def __post_init__(self) -> None:
        module, _, function = self.loop.partition(":")
        if not module or not function.isidentifier():
            raise ValueError(f"loop must be 'module:function', got {self.loop!r}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")


#: a launcher reports what it sees of a job before it ends: ("queued" | "running", detail)
StateCallback = Callable[[JobState, str | None], None]


class LaunchCancelled(RuntimeError):
    """The job's workers were stopped from outside (its RayJob deleted or stopped)."""


class Launcher(Protocol):
    def run(self, spec: WorkerSpec, on_state: StateCallback) -> None:
        """Start the workers, or attach to the ones already running for ``spec.job_id``; return when
        they ended well, raise :class:`LaunchCancelled` when stopped from outside, raise otherwise."""

    def cancel(self, job_id: str) -> None:
        """Stop the job's workers now, if this launcher can (the cancel marker is written anyway)."""


class LocalLauncher:
    """Runs the workers from this process with ``runner(spec)`` (blocking). Cancellation is the marker
    the workers poll, so :meth:`cancel` has nothing to do."""

    def __init__(self, runner: Callable[[WorkerSpec], None]) -> None:
        self.runner = runner

    def run(self, spec: WorkerSpec, on_state: StateCallback) -> None:
        on_state("running", None)
        self.runner(spec)

    def cancel(self, job_id: str) -> None:
        return None
