"""Train settings (env prefix WORLDLOOM_TRAIN_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ServiceSettings, TrainingResources


class TrainSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_TRAIN_", env_nested_delimiter="__", extra="forbid")

    training: TrainingResources = TrainingResources()
