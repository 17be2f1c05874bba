"""Hand-crafted visual embeddings for retrieval and near-duplicate grouping, with no model weights.

No pretrained network is available offline, so a frame is described by three classic blocks,
each L2-normalised and weighted, then the whole vector L2-normalised (cosine = dot product):

* colour: joint HSV histogram (8 hue x 4 saturation x 4 value), square-rooted (Hellinger);
* layout: 8x8 thumbnail in centred YCbCr, so *where* colours are matters;
* texture/shape: gradient-orientation histograms (8 unsigned bins) on a 4x4 grid, HOG-like.

All work happens on a 64x64 area-resized copy, so the vector barely changes with resolution,
aspect ratio or re-encoding, and a frame costs well under a millisecond.
"""

from __future__ import annotations

import numpy as np

from worldloom.video.descriptors import rgb_to_hsv
from worldloom.video.phash import resize_area

_SIDE = 64
_H_BINS, _S_BINS, _V_BINS = 8, 4, 4
_LAYOUT = 8
_GRID, _ORIENT = 4, 8
COLOUR_DIM = _H_BINS * _S_BINS * _V_BINS
LAYOUT_DIM = _LAYOUT * _LAYOUT * 3
GRADIENT_DIM = _GRID * _GRID * _ORIENT
#: Length of every embedding vector.
DIM = COLOUR_DIM + LAYOUT_DIM + GRADIENT_DIM
#: Block weights (colour, layout, gradients) before the final normalisation.
WEIGHTS = (1.0, 1.0, 1.0)


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _colour(rgb: np.ndarray) -> np.ndarray:
    """``[T, S, S, 3]`` float 0-1 -> Hellinger HSV histograms ``[T, COLOUR_DIM]``."""
    h, s, v = rgb_to_hsv(rgb)
    hb = np.minimum((h * _H_BINS).astype(np.int64), _H_BINS - 1)
    sb = np.minimum((s * _S_BINS).astype(np.int64), _S_BINS - 1)
    vb = np.minimum((v * _V_BINS).astype(np.int64), _V_BINS - 1)
    idx = (hb * _S_BINS + sb) * _V_BINS + vb
    t = len(rgb)
    flat = (idx.reshape(t, -1) + np.arange(t)[:, None] * COLOUR_DIM).ravel()
    hist = np.bincount(flat, minlength=t * COLOUR_DIM).reshape(t, COLOUR_DIM).astype(np.float32)
    return np.sqrt(hist / hist.sum(1, keepdims=True))


def _layout(rgb: np.ndarray) -> np.ndarray:
    """8x8 centred-YCbCr thumbnail ``[T, LAYOUT_DIM]`` (brightness and colour placement)."""
    small = resize_area(rgb, _LAYOUT, _LAYOUT)
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = (b - y) * 0.564
    cr = (r - y) * 0.713
    return np.stack([y - 0.5, cb, cr], axis=-1).reshape(len(rgb), -1)


def _gradients(rgb: np.ndarray) -> np.ndarray:
    """Magnitude-weighted, soft-binned orientation histograms per 4x4 cell ``[T, GRADIENT_DIM]``."""
    g = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
    mag = np.hypot(gx, gy)
    ang = (np.arctan2(gy, gx) % np.pi) / np.pi * _ORIENT  # unsigned orientation in bins
    lo = np.floor(ang).astype(np.int64) % _ORIENT
    hi = (lo + 1) % _ORIENT
    frac = ang - np.floor(ang)
    t, s = g.shape[0], g.shape[1]
    cell = s // _GRID
    cy = (np.arange(s) // cell)[:, None]
    cx = (np.arange(s) // cell)[None, :]
    cell_idx = (cy * _GRID + cx)[None]  # [1, S, S]
    base = np.arange(t)[:, None, None] * GRADIENT_DIM + cell_idx * _ORIENT
    n = t * GRADIENT_DIM
    hist = np.bincount((base + lo).ravel(), weights=(mag * (1 - frac)).ravel(), minlength=n)
    hist += np.bincount((base + hi).ravel(), weights=(mag * frac).ravel(), minlength=n)
    return np.sqrt(hist).reshape(t, GRADIENT_DIM)  # sqrt tames strong edges; block norm comes later


def embed_frames(frames: np.ndarray) -> np.ndarray:
    """Embed RGB ``frames`` ``[T, H, W, 3]`` (uint8) -> ``[T, DIM]`` float32, rows unit length."""
    x = np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got {x.shape}")
    if len(x) == 0:
        return np.zeros((0, DIM), np.float32)
    rgb = np.clip(resize_area(x, _SIDE, _SIDE) / 255.0, 0.0, 1.0)
    blocks = [_colour(rgb), _layout(rgb), _gradients(rgb)]
    out = np.concatenate([w * _l2(b) for w, b in zip(WEIGHTS, blocks, strict=True)], axis=1)
    return _l2(out).astype(np.float32)


def embed_image(image: np.ndarray) -> np.ndarray:
    """Embed one RGB image ``[H, W, 3]`` -> ``[DIM]``."""
    return embed_frames(np.asarray(image)[None])[0]


def embed_clip(frames: np.ndarray) -> np.ndarray:
    """Clip vector: mean of the frame embeddings, renormalised (``[DIM]``)."""
    e = embed_frames(frames)
    if len(e) == 0:
        raise ValueError("embed_clip needs at least one frame")
    return _l2(e.mean(0)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of unit vectors (rows); a plain dot product since embeddings are normalised."""
    out = np.asarray(a) @ np.asarray(b).T
    return float(out) if np.ndim(out) == 0 else out


def embed_image_bytes(data: bytes) -> np.ndarray:
    """Embed an encoded image (JPEG, PNG, ...: the first frame ffmpeg decodes) -> ``[DIM]``; a query image
    is embedded like a curated clip's keyframes. ``ValueError`` when the bytes decode to no frame."""
    import tempfile
    from pathlib import Path

    from worldloom.core.scratch import scratch_prefix
    from worldloom.video.analysis import analysis_frames
    from worldloom.video.errors import VideoRejected

    if not data:
        raise ValueError("the image is empty")
    with tempfile.NamedTemporaryFile(prefix=scratch_prefix("image")) as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            frames = analysis_frames(Path(tmp.name), max_frames=1).frames
        except VideoRejected as exc:
            raise ValueError(exc.reason) from None
    if len(frames) == 0:
        raise ValueError("the image has no decodable frame")
    return embed_clip(frames[:1])
