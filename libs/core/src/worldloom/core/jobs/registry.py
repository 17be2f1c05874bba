"""One registry for every kind of training job: a record per job under ``<root>/<id>/``, in the object
store so every replica (and the Ray workers) sees the same state, plus the job's frozen plan.

The record is what the API shows (state, progress, lineage, metrics); the plan (``plan.json``) is the
exact input the workers get -- train/val keys and the resolved model config -- written once at submit,
so a resumed job trains on what its lineage says, whatever the data looks like by then.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from prometheus_client import Counter

from worldloom.core.catalog import job_prefix, plan_key
from worldloom.core.errors import Refusal
from worldloom.core.jobs.progress import TERMINAL_STATES, read_progress
from worldloom.core.jobs.records import JobRecord
from worldloom.core.store.base import InvalidKey, ObjectNotFound, ObjectStore

R = TypeVar("R", bound=JobRecord)

JOBS_FINISHED = Counter("worldloom_jobs_finished_total", "Jobs that reached a final state (the chart's "
                        "job-failure alert reads it)", ["kind", "state"])

ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class JobNotFound(Refusal, LookupError):
    """No job (tokenizer, model, ...) with that id; subclasses set the stable code."""

    code_name = "job_not_found"

    def __init__(self, message: str) -> None:
        super().__init__(404, self.code_name, message)


def valid_job_id(job_id: str) -> bool:
    return bool(job_id) and len(job_id) <= 64 and set(job_id) <= ID_CHARS and job_id[0] != "-"


class JobRegistry(Generic[R]):
    """Records of one job kind: ``<root>/<id>/<record_file>`` validated as ``record_cls``."""

    def __init__(self, store: ObjectStore, record_cls: type[R], *, root: str, record_file: str,
                 not_found: type[JobNotFound] = JobNotFound, kind: str = "job", metric_kind: str | None = None) -> None:
        self.store, self.record_cls, self.root, self.record_file = store, record_cls, root, record_file
        self.not_found, self.kind = not_found, kind
        self.metric_kind = metric_kind or kind.replace(" ", "_")
        self._lock = threading.RLock()

    def prefix(self, job_id: str) -> str:
        return job_prefix(self.root, job_id)

    def record_key(self, job_id: str) -> str:
        return f"{self.prefix(job_id)}/{self.record_file}"

    # ------------------------------------------------------------------------------------------ records

    def save(self, record: R) -> None:
        with self._lock:
            record.updated_at = datetime.now(timezone.utc)
            self.store.put_bytes(self.record_key(record.job_id), record.model_dump_json(indent=1).encode(),
                                 "application/json")

    def exists(self, job_id: str) -> bool:
        return valid_job_id(job_id) and self.store.exists(self.record_key(job_id))

    def raw(self, job_id: str) -> R:
        """The record as the service wrote it (no progress folded in)."""
        if not valid_job_id(job_id):
            raise self.not_found(f"no {self.kind} {job_id!r}")
        try:
            return self.record_cls.model_validate_json(self.store.get_bytes(self.record_key(job_id)))
        except (ObjectNotFound, InvalidKey, ValueError):
            raise self.not_found(f"no {self.kind} {job_id!r}") from None

    def get(self, job_id: str) -> R:
        """The record with the workers' progress folded in (see :meth:`JobRecord.merged`)."""
        return self.raw(job_id).merged(read_progress(self.store, self.prefix(job_id)))

    def ids(self) -> list[str]:
        return sorted({info.key.split("/")[1] for info in self.store.list(f"{self.root}/")
                       if info.key.endswith(f"/{self.record_file}") and info.key.count("/") == 2})

    def list(self) -> list[R]:
        """Every record, newest first."""
        return sorted((self.get(i) for i in self.ids()), key=lambda r: r.created_at, reverse=True)

    def update(self, job_id: str, **changes: Any) -> R:
        """Apply ``changes``; a move into a final state is counted once (``worldloom_jobs_finished_total``)."""
        with self._lock:
            before = self.raw(job_id)
            record = before.model_copy(update=changes)
            self.save(record)
            if record.state in TERMINAL_STATES and before.state != record.state:
                JOBS_FINISHED.labels(self.metric_kind, record.state).inc()
            return record

    # -------------------------------------------------------------------------------------------- plans

    def save_plan(self, job_id: str, plan: dict[str, Any]) -> None:
        self.store.put_bytes(plan_key(self.prefix(job_id)), json.dumps(plan).encode(), "application/json")

    def plan(self, job_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get_bytes(plan_key(self.prefix(job_id))))
        except ObjectNotFound:
            return None
