"""Background recording jobs, with their state kept in the store (jobs/<job_id>.json).

The store is the only shared state, so any replica can answer GET for a job another replica runs.
One worker thread per replica (rendering and encoding are CPU-bound); at most
`max_pending_jobs` queued + running, beyond that 429. A replica that dies leaves its running job
un-updated: readers see `stale: true` once `updated_at` is older than `stale_after_s`; resubmitting
is safe, because episodes are deterministic and ingest deduplicates them by content.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from worldloom.core.scratch import scratch_prefix
from worldloom.core.store import ObjectNotFound, ObjectStore
from worldloom.ingest.schemas import EpisodeOutcome, GymnasiumRequest, JobError, SourceJob
from worldloom.ingest.service import IngestError, IngestService
from worldloom.sim.envs import allowed_envs, available
from worldloom.sim.gymnasium import check_request, record_episode
from worldloom.sim.ingest import ingest_recording
from worldloom.sim.policies import policy_names
from worldloom.sim.settings import GymnasiumLimits

log = logging.getLogger("worldloom.ingest.sources")

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_SAVE_EVERY_S = 1.0  # progress writes during an episode, at most this often


def job_key(job_id: str) -> str:
    return f"jobs/{job_id}.json"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class JobStore:
    def __init__(self, store: ObjectStore, stale_after_s: float) -> None:
        self.store, self.stale_after_s = store, stale_after_s

    def save(self, job: SourceJob) -> None:
        job.updated_at = _now()
        self.store.put_record(job_key(job.job_id), job, exclude={"stale"})

    def load(self, job_id: str) -> SourceJob:
        if not _JOB_ID.match(job_id):
            raise IngestError(404, "not_found", f"no job {job_id!r}: ids are 32 lowercase hex characters")
        try:
            job = self.store.get_record(job_key(job_id), SourceJob)
        except ObjectNotFound:
            raise IngestError(404, "not_found", f"no job {job_id}") from None
        age = (_now() - job.updated_at).total_seconds()
        job.stale = job.state == "running" and age > self.stale_after_s
        return job


class JobRunner:
    """Accepts requests (checked synchronously), runs them one at a time in a worker thread."""

    def __init__(self, service: IngestService, limits: GymnasiumLimits | None = None) -> None:
        self.service = service
        self.limits = limits or GymnasiumLimits()
        self.jobs = JobStore(service.store, self.limits.stale_after_s)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wl-sources")
        self._guard = threading.Lock()
        self._pending: dict[str, SourceJob] = {}
        self._stop = threading.Event()

    def submit(self, request: GymnasiumRequest) -> SourceJob:
        """Refuses a bad request now (IngestError), else persists a queued job and schedules it."""
        r = request
        check_request(r.env, r.episodes, r.policy, r.seed, r.max_steps, r.env_kwargs, self.limits)
        if self._stop.is_set():
            raise IngestError(503, "shutting_down", "this replica is shutting down; submit again")
        now = _now()
        job = SourceJob(job_id=uuid.uuid4().hex, state="queued", request=request, episodes_total=r.episodes,
                        created_at=now, updated_at=now)
        with self._guard:
            if len(self._pending) >= self.limits.max_pending_jobs:
                raise IngestError(429, "too_many_jobs",
                                  f"{len(self._pending)} jobs are queued or running here "
                                  f"(max_pending_jobs={self.limits.max_pending_jobs}); retry later")
            self._pending[job.job_id] = job
        try:
            self.jobs.save(job)
            self._executor.submit(self._run, job)
        except BaseException:
            with self._guard:
                self._pending.pop(job.job_id, None)
            raise
        return job

    def recordable(self) -> dict[str, Any]:
        """The allowed env ids (and whether each can run here), the policies and this replica's limits."""
        envs = [{"id": env_id, "family": fam.name, "available": available(fam), "extra": fam.extra or None}
                for env_id, fam in sorted(allowed_envs().items())]
        return {"envs": envs, "policies": policy_names(), "limits": self.limits.model_dump()}

    def shutdown(self) -> None:
        """Stops the running job at its next step and fails queued ones (their state must not lie)."""
        self._stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._guard:
            left = list(self._pending.values())
            self._pending.clear()
        for job in left:
            self._finish(job, JobError(code="shutting_down", message="the replica shut down before the job ran"))

    # worker ------------------------------------------------------------------------------------
    def _run(self, job: SourceJob) -> None:
        try:
            job.state, job.started_at = "running", _now()
            self.jobs.save(job)
            with tempfile.TemporaryDirectory(prefix=scratch_prefix("gym")) as tmp:
                self._episodes(job, Path(tmp))
            self._finish(job)
        except Exception as exc:  # a bug or the store failing: record it if the store still answers
            log.exception("source job failed", extra={"job_id": job.job_id})
            self._finish(job, JobError(code="internal", message=f"{exc.__class__.__name__}: {exc}"))
        finally:
            with self._guard:
                self._pending.pop(job.job_id, None)

    def _episodes(self, job: SourceJob, tmp: Path) -> None:
        r = job.request
        for k in range(r.episodes):
            last_save = [time.monotonic()]

            def on_step(steps: int, k: int = k, last_save: list[float] = last_save) -> None:
                if self._stop.is_set():
                    raise IngestError(503, "shutting_down", "the replica shut down while recording; submit again "
                                      "(episodes already ingested are deduplicated)")
                if time.monotonic() - last_save[0] >= _SAVE_EVERY_S:
                    job.percent = _percent(k + min(steps / r.max_steps, 0.99), r.episodes)
                    self.jobs.save(job)
                    last_save[0] = time.monotonic()

            try:
                rec = record_episode(r.env, k, r.seed + k, r.policy, r.max_steps, tmp, env_kwargs=r.env_kwargs,
                                     limits=self.limits, on_step=on_step, episode_limits=self.service.episode_limits)
            except IngestError as exc:
                job.errors.append(JobError(episode=k, code=exc.code, message=exc.message))
                if exc.status != 500:  # the request or the replica is the problem: every episode would fail
                    return
                self._episode_done(job, k)
                continue
            try:
                result = ingest_recording(self.service, rec)
                job.episodes.append(EpisodeOutcome(episode=k, seed=rec.seed, video_id=result.video.video_id,
                                                   steps=rec.steps, duplicate=result.duplicate))
                job.video_ids.append(result.video.video_id)
            except IngestError as exc:
                job.errors.append(JobError(episode=k, code=exc.code, message=exc.message))
            finally:
                for p in (rec.video_path, rec.arrays_path, rec.description_path):
                    p.unlink(missing_ok=True)
            self._episode_done(job, k)

    def _episode_done(self, job: SourceJob, k: int) -> None:
        job.episodes_done = k + 1
        job.percent = _percent(k + 1, job.episodes_total)
        self.jobs.save(job)

    def _finish(self, job: SourceJob, error: JobError | None = None) -> None:
        if error is not None:
            job.errors.append(error)
        job.state = "failed" if job.errors else "succeeded"
        job.percent, job.finished_at = 100.0, _now()
        try:
            self.jobs.save(job)
        except Exception:
            log.exception("could not save the final state of a source job", extra={"job_id": job.job_id})


def _percent(done: float, total: int) -> float:
    return round(100.0 * done / total, 1)
