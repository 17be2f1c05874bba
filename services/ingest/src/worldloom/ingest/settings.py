"""Ingest settings (env prefix WORLDLOOM_INGEST_). The blocks rlsim shares are the ingest core's
(worldloom.video.ingest), the simulator sources' limits worldloom.sim.settings.GymnasiumLimits."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from worldloom.core.episodes import EpisodeLimits
from worldloom.core.settings import ClaimingSettings
from worldloom.video.ingest import EpisodeSettings, LimitSettings
from worldloom.video.limits import VideoLimits


class IngestSettings(ClaimingSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_INGEST_", env_nested_delimiter="__", extra="forbid")

    max_upload_bytes: int = Field(2 * 1024**3, ge=1, description="largest accepted video file")
    claim_lease_s: float = Field(
        120.0,
        ge=1,
        description="lease of the claim on a video while it is stored: an "
        "upload killed midway holds the same bytes up this long",
    )
    limits: LimitSettings = LimitSettings()
    episodes: EpisodeSettings = EpisodeSettings()

    def video_limits(self) -> VideoLimits:
        return VideoLimits(max_bytes=self.max_upload_bytes, **self.limits.model_dump())

    def episode_limits(self) -> EpisodeLimits:
        return EpisodeLimits(**self.episodes.model_dump())
