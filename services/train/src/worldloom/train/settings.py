"""Train settings (env prefix WORLDLOOM_TRAIN_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ServiceSettings


class TrainSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_TRAIN_", env_nested_delimiter="__", extra="forbid")

    ray_address: str | None = Field(None, description="existing Ray cluster (e.g. a KubeRay head, ray://head:10001); "
                                    "empty: a local, loopback-only Ray in this process")
    in_process_training: bool = Field(False, description="train in this process without Ray (debugging, demos)")
    max_workers: int = Field(8, ge=1, description="upper bound on Ray workers a job may ask for")
    allow_gpu: bool = Field(True, description="jobs may ask for GPU workers")
    max_steps: int = Field(1_000_000, ge=1)
    max_train_clips: int = Field(100_000, ge=1)
