"""Generate settings (env prefix WORLDLOOM_GENERATE_).

    WORLDLOOM_GENERATE_MODEL_IDS=wm-ar-1,wm-dit-2      models to serve (ids in the world-model registry)
    WORLDLOOM_GENERATE_HTTP__HOST=127.0.0.1            REST bind address (KServe itself would bind 0.0.0.0)
    WORLDLOOM_GENERATE_HTTP__PORT=8080
    WORLDLOOM_GENERATE_HTTP__API_TOKENS=t1,t2          bearer tokens (or HTTP__AUTH_REQUIRED=false)
    WORLDLOOM_GENERATE_GRPC__ENABLED=false             KServe's v2 gRPC endpoint, off by default
    WORLDLOOM_GENERATE_STORE__ROOT=.worldloom/store    where models/, tokenizers/ and clips/ live
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from worldloom.core.settings import ServiceSettings


class GrpcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="serve KServe's Open Inference Protocol v2 over gRPC too")
    host: str = Field("127.0.0.1", description="gRPC bind address")
    port: int = Field(8081, ge=1, le=65535)
    max_threads: int = Field(4, ge=1)
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)


class Limits(BaseModel):
    """Input guardrails; a request past any of them is refused with 400 and the limit named."""

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(4, ge=1, description="videos per request (context_frames [B, T, H, W, 3])")
    max_context_frames: int = Field(33, ge=1, description="context video frames a request may send")
    max_num_frames: int = Field(64, ge=1, description="video frames a request may ask for")
    max_input_side: int = Field(1024, ge=8, description="largest context frame height/width (before resizing)")
    max_steps: int = Field(100, ge=1, description="diffusion sampling steps")
    max_cfg_scale: float = Field(20.0, ge=1.0)
    max_temperature: float = Field(10.0, gt=0.0)
    max_text_chars: int = Field(1000, ge=1, description="characters per text prompt")
    max_action_value: float = Field(1e6, gt=0.0, description="largest |value| of a continuous action")


class GenerateSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_GENERATE_", env_nested_delimiter="__", extra="forbid")

    model_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="world-model ids to serve (comma-separated or a JSON list)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available")
    skip_unloadable: bool = Field(False, description="start with the models that load, instead of failing")
    grpc: GrpcSettings = GrpcSettings()
    limits: Limits = Limits()
    default_steps: int = Field(10, ge=1, description="diffusion steps when a request gives none")
    default_temperature: float = Field(1.0, ge=0.0)
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="largest request body (v2 JSON "
                                   "or binary, :video JSON)")
    video_fps: float = Field(8.0, gt=0.0, le=120.0, description="default fps of the :video route's output")
    gif_max_side: int = Field(256, ge=16, le=1024)
    preload_text_embedder: bool = Field(True, description="load MiniLM at start-up when a model takes text")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's)")
    timeout_keep_alive_s: int = Field(65, ge=1)
    grace_period_s: int = Field(10, ge=0)

    @field_validator("model_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
