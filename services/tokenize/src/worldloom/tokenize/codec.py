"""Loaded tokenizers (a small LRU by id) and the clip <-> tokens conversions the API and consumer share."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from worldloom.core.store.base import ObjectStore
from worldloom.models.tokenizer import CausalVideoTokenizer, CheckpointError
from worldloom.models.tokenizer.data import frames_to_tensor, tensor_to_frames
from worldloom.models.tokenizer.job import CheckpointMissing, load_tokenizer
from worldloom.models.tokenizer.metrics import psnr, ssim
from worldloom.tokenize.errors import TokenizeError
from worldloom.tokenize.registry import TokenizerRegistry


@dataclass
class Encoded:
    kind: str  # "discrete" | "continuous"
    array: np.ndarray  # int32 [t, h, w] indices or float32 [c, t, h, w] latents
    frames: int
    resolution: int


def valid_length(frames: int, t_compression: int) -> int:
    """Longest causal length ``1 + k * t_compression`` that fits in ``frames``."""
    return 1 + (frames - 1) // t_compression * t_compression


class TokenizerCache:
    def __init__(self, store: ObjectStore, registry: TokenizerRegistry, capacity: int = 4) -> None:
        self.store, self.registry, self.capacity = store, registry, capacity
        self._models: OrderedDict[str, CausalVideoTokenizer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tokenizer_id: str) -> CausalVideoTokenizer:
        with self._lock:
            if tokenizer_id in self._models:
                self._models.move_to_end(tokenizer_id)
                return self._models[tokenizer_id]
        record = self.registry.get(tokenizer_id)
        if record.state != "succeeded":
            raise TokenizeError(409, "tokenizer_not_ready", f"tokenizer {tokenizer_id} is {record.state} "
                                f"({record.percent:.0f}% done); it can encode once training has succeeded")
        model = self._load(tokenizer_id)
        with self._lock:
            self._models[tokenizer_id] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return model

    def _load(self, tokenizer_id: str) -> CausalVideoTokenizer:
        try:
            return load_tokenizer(self.store, tokenizer_id)
        except CheckpointMissing as exc:
            raise TokenizeError(409, "checkpoint_missing", str(exc)) from None
        except CheckpointError as exc:
            raise TokenizeError(409, "checkpoint_corrupt", f"tokenizer {tokenizer_id}: {exc}") from None


def check_frames(frames: np.ndarray, model: CausalVideoTokenizer, max_frames: int) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise TokenizeError(422, "bad_shape", f"expected frames [T, H, W, 3], got {list(frames.shape)}")
    if frames.shape[0] > max_frames:
        raise TokenizeError(413, "clip_too_long", f"{frames.shape[0]} frames; the limit is {max_frames} "
                            "(split the clip or pass max_frames)")


@torch.no_grad()
def encode_frames(model: CausalVideoTokenizer, frames: np.ndarray, max_frames: int) -> Encoded:
    """uint8 ``[T, H, W, 3]`` (square, a multiple of the spatial compression) -> tokens or latents."""
    check_frames(frames, model, max_frames)
    t = valid_length(frames.shape[0], model.config.t_compression)
    video = frames_to_tensor(np.ascontiguousarray(frames[:t]))[None]
    out = model.encode(video)
    if model.is_discrete:
        array = out[1][0].to(torch.int32).numpy()
    else:
        array = out[0].float().numpy()
    return Encoded(model.config.kind, array, t, frames.shape[1])


@torch.no_grad()
def decode_array(model: CausalVideoTokenizer, array: np.ndarray, max_elements: int) -> np.ndarray:
    """Tokens ``[t, h, w]`` (discrete) or latents ``[c, t, h, w]`` (continuous) -> uint8 frames."""
    if array.size > max_elements:
        raise TokenizeError(413, "too_many_tokens", f"{array.size} values; the limit is {max_elements}")
    cfg = model.config
    if model.is_discrete:
        if array.ndim != 3:
            raise TokenizeError(422, "bad_shape", f"a discrete tokenizer decodes indices [t, h, w], got {list(array.shape)}")
        if not np.issubdtype(array.dtype, np.integer):
            raise TokenizeError(422, "bad_dtype", "token indices must be integers")
        if array.size and (array.min() < 0 or array.max() >= cfg.codebook_size):
            raise TokenizeError(422, "token_out_of_range", f"token ids must be in [0, {cfg.codebook_size})")
        x = torch.as_tensor(array.astype(np.int64))[None]
    else:
        if array.ndim != 4 or array.shape[0] != cfg.z_channels:
            raise TokenizeError(422, "bad_shape", f"a continuous tokenizer decodes latents [{cfg.z_channels}, t, h, w], "
                                f"got {list(array.shape)}")
        if not np.isfinite(array).all():
            raise TokenizeError(422, "bad_values", "latents contain NaN or infinity")
        x = torch.as_tensor(array.astype(np.float32))[None]
    if min(x.shape[-3:]) < 1:
        raise TokenizeError(422, "bad_shape", "every dimension must be at least 1")
    return tensor_to_frames(model.decode(x)[0])


@torch.no_grad()
def reconstruction_quality(model: CausalVideoTokenizer, frames: np.ndarray, max_frames: int) -> dict[str, float]:
    """PSNR/SSIM of encode -> decode against the input (the frames actually encoded)."""
    check_frames(frames, model, max_frames)
    t = valid_length(frames.shape[0], model.config.t_compression)
    video = frames_to_tensor(np.ascontiguousarray(frames[:t]))[None]
    enc = model.encode(video)
    recon = model.decode(enc[-1] if isinstance(enc, tuple) else enc)  # discrete: the indices
    return {"psnr": float(psnr(recon, video)[0]), "ssim": float(ssim(recon, video)[0]), "frames": float(t)}


def square_frames(path: str | Path, resolution: int, max_frames: int) -> np.ndarray:
    """Probe (rejecting hostile files), then decode up to ``max_frames`` frames as centre-cropped squares.

    The short side is scaled to ``resolution`` by FFmpeg and the long side cropped symmetrically, so
    nothing is squashed. A longer video is refused rather than silently cut.
    """
    from worldloom.video.decode import read_frames
    from worldloom.video.errors import VideoRejected
    from worldloom.video.probe import probe

    try:
        info = probe(path)
        if info.frame_count > max_frames:
            raise TokenizeError(413, "clip_too_long", f"the video has {info.frame_count} frames; the limit is "
                                f"{max_frames} (send a shorter clip)")
        w, h = info.width, info.height
        scale = resolution / min(w, h)
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        frames, _ = read_frames(path, size=size)
    except VideoRejected as exc:
        raise TokenizeError(422, exc.code, exc.reason) from None
    if frames.shape[0] == 0:
        raise TokenizeError(422, "no_frames", "the video has no decodable frames")
    y0, x0 = (frames.shape[1] - resolution) // 2, (frames.shape[2] - resolution) // 2
    return np.ascontiguousarray(frames[:, y0 : y0 + resolution, x0 : x0 + resolution])
