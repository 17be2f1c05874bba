"""What every training job's request and registry record share (tokenizers, world models, next:
post-training and policies); a service subclasses them with what is specific to its job."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worldloom.core.jobs.progress import JobState, Progress
from worldloom.core.selection import ClipFilter, DatasetRef


def dataclass_defaults(cls: type) -> dict[str, Any]:
    """Field defaults of a worker-job dataclass, so a request model declares ``Field(DEFAULTS["steps"])``
    and the library dataclass stays the one source of each default."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


class JobRequest(BaseModel):
    """Fields of every training request: the data (a dataset or a clip filter), the budget and the
    resources. Subclasses add their model options and may redeclare a field to change its default."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("job", min_length=1, max_length=100)
    dataset: DatasetRef | None = Field(None, description="a saved dataset manifest (from search)")
    clips: ClipFilter | None = Field(None, description="or a filter over accepted curated clips")
    steps: int = Field(1000, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    workers: int = Field(1, ge=1, description="Ray Train workers (DDP)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the selected clips held out for evaluation, as whole source videos")
    seed: int = 0

    @model_validator(mode="after")
    def _one_data_source(self) -> Self:
        if (self.dataset is None) == (self.clips is None):
            raise ValueError("give exactly one of 'dataset' or 'clips'")
        return self


class DataLineage(BaseModel):
    """Where a job's data came from: enough to reproduce the selection and to see its size."""

    clip_filter: dict[str, Any] | None = None
    clip_ids_sha256: str = Field("", description="SHA-256 of the sorted selected clip ids")
    train_clips: int = 0
    val_clips: int = 0


class JobRecord(BaseModel):
    """Fields every registry record of a training job shares.

    The service owns ``state``; the progress fields mirror ``progress.json`` written by the workers and
    are folded in on read by :meth:`merged`. ``id_field`` names the subclass's id attribute
    (``tokenizer_id``, ``model_id``), which is the job id."""

    id_field: ClassVar[str]

    name: str
    state: JobState = "queued"
    percent: float = 0.0
    step: int = 0
    total_steps: int = 0
    eta_s: float | None = None
    curves: dict[str, list[tuple[int, float]]] = {}
    metrics: dict[str, float] = {}
    resumed_from_step: list[int] = []
    notes: dict[str, Any] = {}
    error: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="the model's configuration")
    request: dict[str, Any] | None = Field(None, description="the request as accepted")
    model_uri: str | None = None
    announced: bool = Field(False, description="the job's completion event has been published")
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def job_id(self) -> str:
        return str(getattr(self, self.id_field))

    def merged(self, progress: Progress | None) -> Self:
        """The record with the workers' progress folded in (state stays the service's)."""
        if progress is None:
            return self
        return self.model_copy(update=dict(
            percent=progress.percent, step=progress.step, total_steps=progress.total_steps or self.total_steps,
            eta_s=progress.eta_s, curves=progress.curves, metrics=progress.metrics or self.metrics,
            resumed_from_step=progress.resumed_from_step, notes=progress.notes, error=self.error or progress.error,
            updated_at=max(self.updated_at, progress.updated_at)))
