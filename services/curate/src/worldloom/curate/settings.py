"""Curate settings (env prefix WORLDLOOM_CURATE_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ServiceSettings


class CurateSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_CURATE_", env_nested_delimiter="__", extra="forbid")

    consume: bool = Field(True, description="curate every videos.ingested event with the default config")
    consumer_group: str = "curate"
    vlm_url: str | None = Field(None, description="OpenAI-compatible API base URL, e.g. http://vlm:8000/v1")
    vlm_model: str = "vlm"
    vlm_api_key: SecretStr | None = None
    vlm_timeout_s: float = Field(30.0, gt=0)
    max_videos_per_run: int = Field(1000, ge=1)
    parallel_videos: int = Field(2, ge=1, le=64, description="videos of one run curated at the same time")
