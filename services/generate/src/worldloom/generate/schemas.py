"""Request models of the generate server's own routes (the v2 inference protocol is KServe's)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from worldloom.generate.service import BadInput


class FramesJson(BaseModel):
    """uint8 frames ``[T, H, W, 3]`` as JSON: ``b64`` = the raw bytes base64-encoded, or ``data`` nested lists."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(min_length=4, max_length=5)
    b64: str | None = None
    data: list[Any] | None = None

    def to_numpy(self) -> np.ndarray:
        if (self.b64 is None) == (self.data is None):
            raise BadInput("context_frames: give exactly one of 'b64' or 'data'")
        if any(d < 1 for d in self.shape):
            raise BadInput(f"context_frames: every dimension must be >= 1, got {self.shape}")
        try:
            if self.b64 is not None:
                arr = np.frombuffer(base64.b64decode(self.b64, validate=True), dtype=np.uint8)
            else:
                arr = np.asarray(self.data)
                if arr.dtype.kind not in "iu" or arr.size and (arr.min() < 0 or arr.max() > 255):
                    raise BadInput("context_frames: data must be integers 0..255")
                arr = arr.astype(np.uint8)
            return arr.reshape(self.shape)
        except (ValueError, binascii.Error) as exc:
            if isinstance(exc, BadInput):
                raise
            raise BadInput(f"context_frames: data does not match shape {self.shape} ({exc})") from None


class VideoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context_frames: FramesJson | None = None
    clip_id: str | None = None
    clip_start_frame: int | None = None
    actions: list[Any] | None = Field(None, description="[N, D] floats (continuous) or [N] ids (discrete)")
    text: str | None = None
    num_frames: int
    seed: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    resize: bool | None = None
    format: Literal["mp4", "gif"] = "mp4"
    fps: float | None = Field(None, gt=0, le=120)
