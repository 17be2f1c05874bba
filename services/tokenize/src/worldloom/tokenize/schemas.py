"""Request and response models of the tokenize API."""

from __future__ import annotations

import base64
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from worldloom.core.jobs import JobRequest, dataclass_defaults
from worldloom.models.tokenizer.job import TokenizerJob
from worldloom.models.tokenizer.model import COMPRESSIONS, SIZES
from worldloom.tokenize.errors import TokenizeError

_JOB = dataclass_defaults(TokenizerJob)


class TokenizerJobRequest(JobRequest):
    """A tokenizer training job; budget and data defaults are the worker job's (``TokenizerJob``)."""

    name: str = Field("tokenizer", min_length=1, max_length=100)
    kind: Literal["continuous", "discrete"] = "continuous"
    compression: str = Field("4x8x8", description=f"one of {sorted(COMPRESSIONS)}")
    size: str = Field("tiny", description=f"one of {sorted(SIZES)}")
    fsq_levels: list[int] | None = Field(None, min_length=1, max_length=12, description="discrete only")
    latent_channels: int | None = Field(None, ge=1, le=256, description="continuous only")
    resolution: int = Field(_JOB["resolution"], ge=16, le=512)
    frames: int = Field(_JOB["frames"], ge=1, le=129, description="clip length per sample: 1 + k * temporal compression")
    steps: int = Field(_JOB["steps"], ge=1)
    batch: int = Field(_JOB["batch"], ge=1, le=256)
    num_images: int = Field(_JOB["num_images"], ge=0, le=256, description="extra single frames per batch (joint image+video)")
    lr: float = Field(_JOB["lr"], gt=0, le=1)
    checkpoint_every: int = Field(_JOB["checkpoint_every"], ge=1)
    log_every: int = Field(_JOB["log_every"], ge=1)
    seed: int = _JOB["seed"]
    augment: bool = Field(_JOB["augment"], description="random crops and time reversal while training")
    activate: bool = Field(False, description="make it the tokenizer for clips.curated once trained")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}")
        return self


class TokenArray(BaseModel):
    """An array as JSON: ``data`` is a nested list, or ``b64`` the raw little-endian bytes of ``dtype``."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(min_length=1, max_length=5)
    dtype: Literal["int32", "int64", "float16", "float32"]
    data: list[Any] | None = None
    b64: str | None = None

    def to_numpy(self, max_elements: int) -> np.ndarray:
        n = int(np.prod(self.shape)) if self.shape else 0
        if any(d < 1 for d in self.shape):
            raise TokenizeError(422, "bad_shape", f"every dimension must be >= 1, got {self.shape}")
        if n > max_elements:
            raise TokenizeError(413, "too_many_tokens", f"{n} values; the limit is {max_elements}")
        if (self.data is None) == (self.b64 is None):
            raise TokenizeError(422, "bad_array", "give exactly one of 'data' or 'b64'")
        try:
            if self.b64 is not None:
                raw = base64.b64decode(self.b64, validate=True)
                array = np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape)
            else:
                array = np.asarray(self.data, dtype=self.dtype).reshape(self.shape)
        except (ValueError, TypeError) as exc:
            raise TokenizeError(422, "bad_array", f"the array does not match shape {self.shape} / {self.dtype}: {exc}") from None
        return array

    @classmethod
    def from_numpy(cls, array: np.ndarray, as_b64: bool) -> TokenArray:
        dtype = str(array.dtype)
        if as_b64:
            return cls(shape=list(array.shape), dtype=dtype, b64=base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode())
        return cls(shape=list(array.shape), dtype=dtype, data=array.tolist())


class EncodeResult(BaseModel):
    tokenizer_id: str
    kind: str
    compression: str
    frames: int = Field(description="frames encoded (the longest causal length 1 + k*t that fits)")
    resolution: int
    tokens: TokenArray = Field(description="indices [t, h, w] (discrete) or latents [c, t, h, w] (continuous)")


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer_id: str | None = Field(None, description="the active tokenizer when omitted")
    tokens: TokenArray
    format: Literal["mp4", "gif", "json"] = "mp4"
    fps: float = Field(10.0, gt=0, le=120)


class EvalResult(BaseModel):
    tokenizer_id: str
    psnr: float
    ssim: float
    frames: int
    resolution: int


