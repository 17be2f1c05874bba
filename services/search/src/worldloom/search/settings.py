"""Search settings (env prefix WORLDLOOM_SEARCH_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ServiceSettings


class SearchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_SEARCH_", env_nested_delimiter="__", extra="forbid")

    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest query image or clip")
    max_top_k: int = Field(100, ge=1, le=1000)
    max_dataset_clips: int = Field(100_000, ge=1)
