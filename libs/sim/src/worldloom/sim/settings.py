"""The simulator sources' limits (env prefix WORLDLOOM_GYMNASIUM_): one place for every service that records."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
