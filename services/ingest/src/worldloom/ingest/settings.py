"""Ingest settings (env prefix WORLDLOOM_INGEST_)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ServiceSettings
from worldloom.video.limits import VideoLimits


class LimitSettings(BaseModel):
    """Decoding limits for untrusted videos; exceeding one is a 4xx with the limit named."""

    model_config = ConfigDict(extra="forbid")
    max_width: int = Field(7680, ge=16)
    max_height: int = Field(4320, ge=16)
    min_side: int = Field(16, ge=1)
    max_aspect_ratio: float = Field(8.0, ge=1)
    max_duration_s: float = Field(2 * 3600, gt=0)
    max_fps: float = Field(240, gt=0)


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_INGEST_", env_nested_delimiter="__", extra="forbid")

    max_upload_bytes: int = Field(2 * 1024**3, ge=1, description="largest accepted video file")
    limits: LimitSettings = LimitSettings()

    def video_limits(self) -> VideoLimits:
        return VideoLimits(max_bytes=self.max_upload_bytes, **self.limits.model_dump())
