"""Curate settings (env prefix WORLDLOOM_CURATE_)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ClaimingSettings
from worldloom.curate.config import SIMULATOR_PROFILE


class CurateSettings(ClaimingSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_CURATE_", env_nested_delimiter="__", extra="forbid")

    consume: bool = Field(True, description="curate every videos.ingested event with the default config")
    consumer_group: str = "curate"
    source_profiles: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"gymnasium": SIMULATOR_PROFILE},
        description="config overrides per video source for videos.ingested events (JSON), e.g. the simulator "
                    "profile for gymnasium episodes; other sources get the default config. Setting it replaces "
                    "these defaults")
    vlm_url: str | None = Field(None, description="OpenAI-compatible API base URL, e.g. http://vlm:8000/v1")
    vlm_model: str = "vlm"
    vlm_api_key: SecretStr | None = None
    vlm_timeout_s: float = Field(30.0, gt=0)
    vlm_retries: int = Field(2, ge=0, le=10, description="retries of a transient VLM failure before the fallback")
    vlm_retry_backoff_s: float = Field(1.0, ge=0, description="first pause between VLM retries (doubles)")
    max_videos_per_run: int = Field(1000, ge=1)
    parallel_videos: int = Field(2, ge=1, le=64, description="videos of one run curated at the same time")

    @field_validator("source_profiles")
    @classmethod
    def _profiles_are_valid_configs(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from worldloom.curate.config import config_with

        for source, overrides in value.items():
            try:
                config_with(overrides)
            except ValueError as exc:
                raise ValueError(f"source profile {source!r}: {exc}") from None
        return value
