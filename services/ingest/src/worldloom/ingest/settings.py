"""Ingest settings (env prefix WORLDLOOM_INGEST_) and the simulator sources' limits (WORLDLOOM_GYMNASIUM_)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from worldloom.core.episodes import EpisodeLimits
from worldloom.core.settings import ClaimingSettings
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


class EpisodeSettings(BaseModel):
    """Bounds on the per-step arrays an upload carries beside its video (worldloom.core.episodes)."""

    model_config = ConfigDict(extra="forbid")
    max_action_dims: int = Field(64, ge=1, description="values per action row")
    max_state_dims: int = Field(256, ge=1, description="values per state row")
    max_array_bytes: int = Field(64 * 1024**2, ge=1024, description="one array part, and all arrays together")
    max_json_bytes: int = Field(4 * 1024**2, ge=1024, description="an array sent as JSON text")


class IngestSettings(ClaimingSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_INGEST_", env_nested_delimiter="__", extra="forbid")

    max_upload_bytes: int = Field(2 * 1024**3, ge=1, description="largest accepted video file")
    claim_lease_s: float = Field(120.0, ge=1, description="lease of the claim on a video while it is stored: an "
                                                          "upload killed midway holds the same bytes up this long")
    limits: LimitSettings = LimitSettings()
    episodes: EpisodeSettings = EpisodeSettings()

    def video_limits(self) -> VideoLimits:
        return VideoLimits(max_bytes=self.max_upload_bytes, **self.limits.model_dump())

    def episode_limits(self) -> EpisodeLimits:
        return EpisodeLimits(**self.episodes.model_dump())


class GymnasiumLimits(BaseSettings):
    """A request over a limit is refused up front (4xx naming the limit), never cut short silently."""

    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_GYMNASIUM_", extra="ignore")

    max_episodes: int = Field(64, ge=1, description="episodes per request")
    max_steps: int = Field(10_000, ge=1, description="env steps per episode (frames = steps + 1)")
    max_width: int = Field(1920, ge=16, description="rendered frame, long side")
    max_height: int = Field(1080, ge=16, description="rendered frame, short side")
    max_env_kwargs_bytes: int = Field(4096, ge=2, description="env_kwargs as JSON")
    max_observation_bytes: int = Field(
        4096, ge=0, description="observations are stored only when one step's observation is at most this big"
    )
    max_pending_jobs: int = Field(8, ge=1, description="queued + running jobs per replica")
    stale_after_s: float = Field(600, gt=0, description="a running job not updated for this long is reported stale")
