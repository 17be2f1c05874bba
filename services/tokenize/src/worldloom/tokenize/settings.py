"""Tokenize settings (env prefix WORLDLOOM_TOKENIZE_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from worldloom.core.settings import ServiceSettings


class TokenizeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_TOKENIZE_", env_nested_delimiter="__", extra="forbid")

    consume: bool = Field(True, description="encode every clips.curated event with the active tokenizer")
    consumer_group: str = "tokenize"
    ray_address: str | None = Field(None, description="existing Ray cluster (e.g. ray://head:10001); "
                                    "empty: a local, loopback-only Ray in this process")
    in_process_training: bool = Field(False, description="train in this process without Ray (debugging only)")
    max_workers: int = Field(8, ge=1, description="upper bound on Ray workers a job may ask for")
    allow_gpu: bool = Field(True, description="jobs may ask for GPU workers")
    max_steps: int = Field(200_000, ge=1)
    max_train_clips: int = Field(20_000, ge=1)
    encode_max_frames: int = Field(129, ge=1, description="longest clip /v1/encode and the consumer accept")
    encode_max_resolution: int = Field(256, ge=16)
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_decode_tokens: int = Field(1_000_000, ge=1, description="largest token/latent array /v1/decode accepts")
    model_cache: int = Field(4, ge=1, description="tokenizers kept loaded in memory")
