"""The ingest API's request and response shapes. The sidecar stored next to each raw video
(VideoRecord) is in the core catalog, because curate reads it too; a SourceJob is also what the store
keeps of a recording job (jobs/<job_id>.json). IngestResult and VideoPage are the shared ingest core's
(worldloom.video.ingest), re-exported here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worldloom.core.catalog import ATTRIBUTE_LIMITS
from worldloom.video.ingest import IngestResult, VideoPage

__all__ = ["IngestResult", "VideoPage"]


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="s3://<bucket>/<key> of an object in the configured store")
    filename: str | None = Field(None, max_length=255)
    attributes: dict[str, str] = Field(default_factory=dict, max_length=ATTRIBUTE_LIMITS.max_entries,
                                       description="checked against ATTRIBUTE_LIMITS like an upload's")


JobState = Literal["queued", "running", "succeeded", "failed"]


class GymnasiumRequest(BaseModel):
    """Record `episodes` episodes of `env`; episode k is reset and its policy seeded with seed + k."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_./-]+$", examples=["CartPole-v1"])
    episodes: int = Field(1, description="1..max_episodes")
    policy: str = Field("random", min_length=1, max_length=256, description='"random", "constant:<json>" or, for Reacher-v5 and Pusher-v5, "scripted[:<noise 0..1>]"')
    seed: int = 0
    max_steps: int = Field(500, description="1..max_steps; the video has steps + 1 frames")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to gymnasium.make")


class JobError(BaseModel):
    episode: int | None = None
    code: str
    message: str


class EpisodeOutcome(BaseModel):
    episode: int
    seed: int
    video_id: str
    steps: int
    duplicate: bool = Field(description="this content was already ingested (no new event)")


class SourceJob(BaseModel):
    job_id: str
    source: Literal["gymnasium"] = "gymnasium"
    state: JobState
    request: GymnasiumRequest
    percent: float = Field(0.0, description="0..100; 100 once finished, whether or not it failed")
    episodes_total: int
    episodes_done: int = 0
    video_ids: list[str] = []
    episodes: list[EpisodeOutcome] = []
    errors: list[JobError] = []
    stale: bool = Field(False, description="running but not updated for stale_after_s: its replica likely died")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
