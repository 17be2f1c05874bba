"""Progress of long-running jobs (training), kept in the object store so any process can read it.

A training job runs on Ray workers that may live on other machines and restart; the service that
launched it may restart too. So the worker (rank 0) writes ``<prefix>/progress.json`` and the service
reads it, and cancellation is a marker object ``<prefix>/cancel`` that workers poll. Nothing needs a
live connection between the two.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field

from worldloom.core.catalog import cancel_key, progress_key
from worldloom.core.settings import StoreSettings
from worldloom.core.store.base import ObjectNotFound, ObjectStore

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

class Progress(BaseModel):
    """What a worker knows: steps done, curves, final metrics, restarts."""

    state: JobState = "queued"
    step: int = 0
    total_steps: int = 0
    percent: float = Field(0.0, description="steps done / total steps, 0-100")
    sec_per_step: float | None = None
    eta_s: float | None = None
    curves: dict[str, list[tuple[int, float]]] = Field(
        default_factory=dict, description="name -> [(step, value)]: training loss, psnr, validation metrics"
    )
    metrics: dict[str, float] = Field(default_factory=dict, description="final evaluation metrics")
    resumed_from_step: list[int] = Field(default_factory=list, description="checkpoint steps the job restarted from")
    workers: int = 1
    worker_pids: list[int] = Field(default_factory=list, description="pids of the current worker group (rank order)")
    notes: dict[str, Any] = Field(default_factory=dict,
                                  description="facts about the run, e.g. what was copied from a parent model")
    error: str | None = None
    updated_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


def read_progress(store: ObjectStore, prefix: str) -> Progress | None:
    try:
        return Progress.model_validate_json(store.get_bytes(progress_key(prefix)))
    except ObjectNotFound:
        return None


class ProgressWriter:
    """Accumulates curves and writes progress.json at most every ``min_interval_s`` (and on demand)."""

    def __init__(self, store: ObjectStore, prefix: str, total_steps: int, *, workers: int = 1,
                 min_interval_s: float = 1.0) -> None:
        self.store, self.prefix, self.min_interval_s = store, prefix, min_interval_s
        previous = read_progress(store, prefix)
        self.progress = previous.model_copy() if previous is not None else Progress()
        self.progress.total_steps, self.progress.workers = total_steps, workers
        self._last_write = 0.0

    def log(self, step: int, values: dict[str, float], *, force: bool = False) -> None:
        """Record curve points for ``step`` (a resumed job overwrites points past its checkpoint)."""
        p = self.progress
        for name, value in values.items():
            curve = [pt for pt in p.curves.get(name, []) if pt[0] < step]
            curve.append((step, float(value)))
            p.curves[name] = curve
        self.set_step(step, values.get("sec_per_step"), force=force)

    def set_step(self, step: int, sec_per_step: float | None = None, *, force: bool = False) -> None:
        p = self.progress
        p.state, p.step = "running", step
        p.percent = round(100.0 * step / max(1, p.total_steps), 2)
        if sec_per_step is not None:
            p.sec_per_step = sec_per_step
            p.eta_s = round(sec_per_step * max(0, p.total_steps - step), 1)
        self.flush(force=force)

    def resumed(self, step: int, pids: list[int]) -> None:
        self.progress.worker_pids = pids
        if step > 0:
            self.progress.resumed_from_step.append(step)
        self.set_step(step, force=True)

    def note(self, name: str, value: Any) -> None:
        self.progress.notes[name] = value
        self.flush(force=True)

    def finish(self, state: JobState, metrics: dict[str, float] | None = None, error: str | None = None) -> None:
        p = self.progress
        p.state, p.error = state, error
        if metrics:
            p.metrics.update({k: float(v) for k, v in metrics.items()})
        if state == "succeeded":
            p.step, p.percent, p.eta_s = p.total_steps, 100.0, 0.0
        self.flush(force=True)

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval_s:
            return
        self.progress.updated_at = datetime.now(timezone.utc)
        self.store.put_bytes(progress_key(self.prefix), self.progress.model_dump_json().encode(),
                             "application/json")
        self._last_write = now

    def cancelled(self) -> bool:
        return self.store.exists(cancel_key(self.prefix))


def request_cancel(store: ObjectStore, prefix: str, reason: str = "cancelled by user") -> None:
    store.put_bytes(cancel_key(prefix), json.dumps({"reason": reason}).encode(), "application/json")


def store_settings_payload(settings: StoreSettings) -> dict[str, Any]:
    """StoreSettings as a plain dict *with* secrets, for handing to worker processes we launch."""
    data = settings.model_dump(mode="json")
    for name in ("access_key", "secret_key"):
        secret = getattr(settings, name)
        data[name] = secret.get_secret_value() if secret is not None else None
    return data
