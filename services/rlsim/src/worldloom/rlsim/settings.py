"""RL-sim settings (env prefix WORLDLOOM_RLSIM_): which real environments experiments may use and how much."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ClaimingSettings, TrainingResources
from worldloom.video.ingest import EpisodeSettings, LimitSettings

DEFAULT_ENVS = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "MountainCarContinuous-v0"]


class RlLimits(BaseModel):
    """What one experiment or evaluation may ask for; a request past a limit is a 422 naming it."""

    model_config = ConfigDict(extra="forbid")
    allowed_envs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ENVS),
        description="Gymnasium ids experiments may act in (each must render rgb_array)",
    )
    max_real_steps: int = Field(100_000, ge=1, description="real environment steps one experiment may use")
    max_episode_steps: int = Field(1000, ge=1, description="real steps per episode (longer ones are truncated)")
    min_resolution: int = Field(16, ge=16)
    max_resolution: int = Field(128, ge=16)
    max_imagined_envs: int = Field(256, ge=1)
    max_eval_episodes: int = Field(50, ge=1, description="episodes per POST /v1/policies/{id}/evaluate")
    max_iterations: int = Field(200, ge=1, description="collect -> update -> imagine -> evaluate rounds")


class RlsimSettings(ClaimingSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_RLSIM_", env_nested_delimiter="__", extra="forbid")

    rl: RlLimits = RlLimits()
    training: TrainingResources = TrainingResources()
    claim_lease_s: float = Field(120.0, ge=1, description="lease of the ingest claim on an episode's video")
    # the real episodes are ingested like any video: the ingest core's limits apply to them
    limits: LimitSettings = LimitSettings()
    episodes: EpisodeSettings = EpisodeSettings()

    @model_validator(mode="after")
    def _local_only(self) -> Self:
        """Experiments run in this process (a real env, the world model and the agent take turns, and the
        episodes go onto this service's bus): a Ray address or RayJob launcher would be silently ignored."""
        if self.training.launcher != "local" or self.training.ray_address:
            raise ValueError(
                "rlsim runs experiments in its own process: training.launcher must be 'local' and "
                "training.ray_address unset"
            )
        return self
