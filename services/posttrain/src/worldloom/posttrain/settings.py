"""Posttrain settings (env prefix WORLDLOOM_POSTTRAIN_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ServiceSettings, TrainingResources


class PosttrainSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_POSTTRAIN_", env_nested_delimiter="__", extra="forbid")

    training: TrainingResources = TrainingResources()
    max_minutes: float = Field(24 * 60, gt=0, description="upper bound on a job's wall-time budget (per phase)")
    max_search_top_k: int = Field(10_000, ge=1, description="upper bound on the clips a job's search may select")
