"""Per-clip quality scores and threshold filters, with the value and threshold behind every rejection.

Scores are computed on small frames (``[T, H, W, 3]`` uint8, ~64-128 px, sampled at a few fps);
they are resized to :data:`~worldloom.video.descriptors.MOTION_SIDE` px so thresholds do not
depend on the caller's resolution. Every rejection is recorded as data, not just a boolean,
so curation reports can say *why* a clip was dropped and thresholds can be tuned afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ConfigDict, with_config

from worldloom.core.catalog import Rejection
from worldloom.video.descriptors import global_motion, motion_gray

#: Luma below this is "black", above :data:`WHITE_LUMA` "overexposed" (0-255, full range RGB).
BLACK_LUMA = 16
WHITE_LUMA = 240
#: A frame counts as black/overexposed when at least this share of its pixels is.
MOSTLY = 0.95
#: Consecutive frames whose mean abs grey difference is below this are "frozen" (identical).
FROZEN_DIFF = 0.05


@dataclass(frozen=True)
class ClipScores:
    """Quality measurements of one clip (units in the field comments)."""

    motion_mean: float  # mean abs grey difference of consecutive frames, 0-255
    motion_shake: float  # median frame-to-frame change of global motion, fraction of the frame
    sharpness: float  # mean variance of the grey Laplacian; LOW = blurry/flat
    brightness: float  # mean luma, 0-255
    black_fraction: float  # share of frames that are (almost all) black
    overexposed_fraction: float  # share of frames that are (almost all) blown out
    frozen_fraction: float  # share of consecutive pairs without any change
    duration_s: float
    frame_count: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@with_config(ConfigDict(extra="forbid"))  # it is also the curate API's `filters` section: unknown keys are refused
@dataclass(frozen=True)
class FilterConfig:
    """Thresholds; ``None`` disables a filter. Defaults accept ordinary footage (film shots,
    3 fps robot episodes) and reject static, black, white, blurred, shaking or noise clips."""

    min_duration_s: float | None = 1.0
    max_duration_s: float | None = 120.0
    min_motion: float | None = 0.15  # below: a still image; a near-still dark shot at 24 fps scores ~0.27
    max_motion: float | None = 40.0  # above: flashing/noise/cut-heavy, not a coherent scene
    max_shake: float | None = 0.04  # frame fraction; sample at >= 8 fps, slower sampling aliases smooth motion into jitter
    min_sharpness: float | None = 30.0  # Laplacian variance at <= MOTION_SIDE px; dark sharp shots score ~110
    max_black_fraction: float | None = 0.5
    max_overexposed_fraction: float | None = 0.5
    max_frozen_fraction: float | None = 0.5


_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float32)


def laplacian_variance(gray: np.ndarray) -> np.ndarray:
    """Variance of the 4-neighbour Laplacian of each grey frame ``[..., h, w]`` (valid region)."""
    g = np.asarray(gray, dtype=np.float32)
    lap = g[..., :-2, 1:-1] + g[..., 2:, 1:-1] + g[..., 1:-1, :-2] + g[..., 1:-1, 2:] - 4 * g[..., 1:-1, 1:-1]
    return lap.var(axis=(-2, -1))


def clip_scores(frames: np.ndarray, fps: float, duration_s: float | None = None) -> ClipScores:
    """Score RGB ``frames`` ``[T, H, W, 3]`` uint8 sampled at ``fps`` (duration defaults to T / fps)."""
    x = np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
        raise ValueError(f"frames must be [T, H, W, 3], got {x.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    gray = motion_gray(x)
    # Black/white are judged per pixel on the resized frames: a few bright pixels of text on
    # black still make a black frame, a dark but visible scene does not.
    black = ((gray < BLACK_LUMA).mean(axis=(1, 2)) >= MOSTLY).mean()
    white = ((gray > WHITE_LUMA).mean(axis=(1, 2)) >= MOSTLY).mean()
    if len(x) > 1:
        diffs = np.abs(np.diff(gray, axis=0)).mean(axis=(1, 2))
        motion, frozen = float(diffs.mean()), float((diffs < FROZEN_DIFF).mean())
    else:
        motion, frozen = 0.0, 1.0
    gm = global_motion(gray)
    shake = float(np.median(np.linalg.norm(np.diff(gm[:, :2], axis=0), axis=1))) if len(gm) > 1 else 0.0
    return ClipScores(
        motion_mean=motion,
        motion_shake=shake,
        sharpness=float(laplacian_variance(gray).mean()),
        brightness=float(gray.mean()),
        black_fraction=float(black),
        overexposed_fraction=float(white),
        frozen_fraction=frozen,
        duration_s=float(duration_s if duration_s is not None else len(x) / fps),
        frame_count=len(x),
    )


def evaluate(scores: ClipScores, config: FilterConfig = FilterConfig()) -> list[Rejection]:
    """Every filter the clip fails (empty list = keep the clip), as the catalog's Rejection records."""
    checks = (
        ("min_duration", scores.duration_s, config.min_duration_s, False, "clip is too short ({v:.2f} s < {t} s)"),
        ("max_duration", scores.duration_s, config.max_duration_s, True, "clip is too long ({v:.2f} s > {t} s)"),
        ("min_motion", scores.motion_mean, config.min_motion, False, "too static (motion {v:.2f} < {t})"),
        ("max_motion", scores.motion_mean, config.max_motion, True, "chaotic change, like noise or flashing (motion {v:.1f} > {t})"),
        ("max_shake", scores.motion_shake, config.max_shake, True, "camera shake (jitter {v:.3f} > {t} of the frame)"),
        ("min_sharpness", scores.sharpness, config.min_sharpness, False, "blurry or flat (Laplacian variance {v:.1f} < {t})"),
        ("max_black", scores.black_fraction, config.max_black_fraction, True, "mostly black frames ({v:.0%} > {t:.0%})"),
        ("max_overexposed", scores.overexposed_fraction, config.max_overexposed_fraction, True, "mostly overexposed frames ({v:.0%} > {t:.0%})"),
        ("max_frozen", scores.frozen_fraction, config.max_frozen_fraction, True, "frozen frames ({v:.0%} > {t:.0%})"),
    )  # fmt: skip
    out = []
    for name, value, threshold, is_max, text in checks:
        if threshold is None:
            continue
        if (value > threshold) if is_max else (value < threshold):
            out.append(Rejection(filter=name, reason=text.format(v=value, t=threshold), value=float(value),
                                 threshold=float(threshold)))
    return out
