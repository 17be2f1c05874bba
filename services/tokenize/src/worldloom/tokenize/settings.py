"""Tokenize settings (env prefix WORLDLOOM_TOKENIZE_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ClaimingSettings, TrainingResources


class TokenizerTraining(TrainingResources):
    """Tokenizer jobs decode all their clips into memory, so they may select fewer than world-model jobs."""

    max_steps: int = Field(200_000, ge=1, description="upper bound on a job's training steps")
    max_clips: int = Field(20_000, ge=1, description="upper bound on the clips a job may select")


class TokenizeSettings(ClaimingSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_TOKENIZE_", env_nested_delimiter="__", extra="forbid")

    consume: bool = Field(True, description="encode every clips.curated event with the active tokenizer")
    consumer_group: str = "tokenize"
    training: TokenizerTraining = TokenizerTraining()
    encode_max_frames: int = Field(129, ge=1, description="longest clip /v1/encode and the consumer accept")
    encode_max_resolution: int = Field(256, ge=16)
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_decode_tokens: int = Field(1_000_000, ge=1, description="largest token/latent array /v1/decode accepts")
    model_cache: int = Field(4, ge=1, description="tokenizers kept loaded in memory")
