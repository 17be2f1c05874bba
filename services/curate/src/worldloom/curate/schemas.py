"""The curate API's request and response shapes; a CurationRun is also the run's record in the store
(runs/<run_id>/run.json). What a run does, its CurationConfig, is in config.py."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from worldloom.curate.config import CurationConfig


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video_ids: list[str] = Field(min_length=1, max_length=10_000)
    config: CurationConfig = Field(default_factory=CurationConfig)


class RecaptionRequest(BaseModel):
    """Re-curate every video whose clips (with ``config``) fell back to a caption without the VLM."""

    model_config = ConfigDict(extra="forbid")

    config: CurationConfig = Field(default_factory=CurationConfig)


class PipelineInfo(BaseModel):
    config_hash: str
    config: dict[str, Any]
    stages: list[dict[str, Any]] = Field(description="name, fields read and written, resources per stage")


RunState = Literal["queued", "running", "succeeded", "failed"]


class StageCount(BaseModel):
    clips_in: int = 0
    clips_out: int = 0
    seconds: float = 0.0


class VideoOutcome(BaseModel):
    video_id: str
    state: Literal["pending", "running", "done", "skipped", "failed"] = "pending"
    clips_total: int = 0
    clips_accepted: int = 0
    error: str | None = None
    permanent: bool = Field(False, description="the failure is in the input; retrying cannot help")
    captions_fallback: int = Field(0, description="accepted clips captioned without the VLM it failed; "
                                                  "POST /v1/curation-runs:recaption redoes them")


class CurationRun(BaseModel):
    run_id: str
    state: RunState = "queued"
    trigger: Literal["api", "event"] = "api"
    config_hash: str
    config: dict[str, Any]
    pipeline: list[dict[str, Any]] = []
    videos: list[VideoOutcome]
    percent_done: float = 0.0
    stage_counts: dict[str, StageCount] = {}
    rejections_by_filter: dict[str, int] = {}
    clips_total: int = 0
    clips_accepted: int = 0
    video_seconds: float = 0.0
    wall_seconds: float = 0.0
    summary_uri: str | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    finished_at: datetime | None = None
    _rows: list[dict[str, Any]] = PrivateAttr(default_factory=list)  # summary.parquet rows, not persisted
