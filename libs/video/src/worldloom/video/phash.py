"""64-bit DCT perceptual hashes of frames and clips, for exact-duplicate detection.

A pHash keeps only the lowest 8x8 DCT frequencies of a 32x32 grey thumbnail, so it survives
re-encoding, rescaling and mild colour shifts, while different shots differ in ~half the bits.
Also home of the tiny numpy image helpers (:func:`luma`, :func:`resize_area`) shared by the
filter, descriptor and embedding modules, so none of them needs OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

HASH_BITS = 64


def luma(images: np.ndarray) -> np.ndarray:
    """BT.601 luma (float32, 0-255) of RGB ``[..., 3]`` images."""
    x = np.asarray(images)
    return (x[..., 0] * np.float32(0.299) + x[..., 1] * np.float32(0.587) + x[..., 2] * np.float32(0.114)).astype(
        np.float32
    )


@lru_cache(maxsize=64)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` matrix averaging the input cells each output cell overlaps (box filter)."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


def resize_area(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average resize of ``[..., H, W, C]`` images to ``[..., height, width, C]`` (float32).

    Two small matrix products instead of OpenCV; anti-aliased when shrinking, which is all the
    analysis code needs (upscaling degrades to nearest-neighbour-like boxes).
    """
    x = np.asarray(images, dtype=np.float32)
    h, w = x.shape[-3], x.shape[-2]
    if (h, w) != (height, width):
        ry, rx = _area_weights(h, height), _area_weights(w, width)
        x = np.einsum("yh,...hwc->...ywc", ry, x, optimize=True)
        x = np.einsum("xw,...ywc->...yxc", rx, x, optimize=True)
    return x


def fit_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) scaled so the long side is at most ``max_side`` (never upscales)."""
    s = min(1.0, max_side / max(height, width))
    return max(1, round(height * s)), max(1, round(width * s))


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix, so ``D @ x @ D.T`` is the 2-D DCT of ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float64)


def phash_frames(frames: np.ndarray) -> list[int]:
    """pHash of each RGB frame in ``[T, H, W, 3]`` (vectorised :func:`phash`)."""
    x = np.asarray(frames)
    g = resize_area(luma(x)[..., None], 32, 32)[..., 0].astype(np.float64)
    d = _dct_matrix(32)
    low = (d @ g @ d.T)[..., :8, :8].reshape(len(x), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    weights = 1 << np.arange(63, -1, -1, dtype=np.uint64)
    return [int(v) for v in (bits.astype(np.uint64) * weights).sum(1, dtype=np.uint64)]


def phash(image: np.ndarray) -> int:
    """64-bit perceptual hash of one RGB (``[H, W, 3]``) or grey (``[H, W]``) image.

    32x32 area-resized luma -> 2-D DCT -> top-left 8x8 -> bit = coefficient > median (row-major,
    most significant bit first).
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return phash_frames(img[None])[0]


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return int(a ^ b).bit_count()


def clip_phash(frames: np.ndarray | Sequence[np.ndarray], n: int = 5) -> list[int]:
    """Hashes of ``n`` evenly spaced frames, at the centres of ``n`` equal segments of the clip.

    A list rather than one combined hash: a single hash of an average frame collides for
    static-looking clips, and per-position hashes let :func:`clip_distance` compare clip to clip.
    Segment centres skip the first/last frames, which are often fades whose flat images hash
    unstably (many DCT coefficients sit near the median).
    """
    x = np.asarray(frames)
    if len(x) == 0:
        raise ValueError("clip_phash needs at least one frame")
    k = min(n, len(x))
    picks = ((np.arange(k) + 0.5) * len(x) / k).astype(int)
    return phash_frames(x[picks])


def clip_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """Mean Hamming distance of position-matched hashes (0 = identical, ~32 = unrelated)."""
    if not a or not b:
        raise ValueError("empty hash list")
    if len(a) != len(b):  # different lengths: compare at matching relative positions
        m = min(len(a), len(b))
        a = [a[i] for i in np.linspace(0, len(a) - 1, m).round().astype(int)]
        b = [b[i] for i in np.linspace(0, len(b) - 1, m).round().astype(int)]
    return float(np.mean([hamming(x, y) for x, y in zip(a, b, strict=True)]))


def is_duplicate(a: Sequence[int], b: Sequence[int], max_distance: float = 10.0) -> bool:
    """Same content (re-encode/rescale of one clip)? ``max_distance`` is in bits of 64."""
    return clip_distance(a, b) <= max_distance
