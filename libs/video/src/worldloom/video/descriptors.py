"""Cheap, deterministic visual descriptors of a clip for captions and tags (no models).

Brightness, motion, dominant colours from a fixed named palette, and camera motion estimated
from global motion between consecutive frames: phase correlation (numpy FFT) of the whole frame
gives the translation, and phase correlation of a 3x3 grid of overlapping tiles gives local
shifts whose divergence from the centre is the zoom. Meant for frames sampled at a few fps and
downscaled to ~64-160 px; everything here is plain numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from worldloom.video.phash import fit_size, luma, resize_area

#: Long side (px) the motion analysis works at; small keeps FFTs cheap and averages out noise.
MOTION_SIDE = 96

BRIGHTNESS_LEVELS = ("dark", "normal", "bright")
MOTION_LEVELS = ("static", "slow", "moderate", "fast")
CAMERA_MOTIONS = ("static", "pan left", "pan right", "tilt up", "tilt down", "zoom in", "zoom out", "handheld")

#: Named palette for dominant colours (names are what captions say).
COLOUR_NAMES = (
    "black", "grey", "white", "red", "orange", "brown", "yellow", "green", "cyan", "blue", "purple", "pink",
)  # fmt: skip


@dataclass(frozen=True)
class Descriptors:
    """What a clip looks like, as levels/labels plus the numbers they came from."""

    brightness: str
    motion: str
    camera_motion: str
    colours: list[str]
    brightness_mean: float
    motion_mean: float
    colour_shares: dict[str, float] = field(default_factory=dict)
    pan_x: float = 0.0  # net camera-caused content shift, fraction of the frame width (+ = right)
    pan_y: float = 0.0  # ... of the frame height (+ = down)
    zoom: float = 0.0  # net log scale change (+ = content grows, camera zooms in)

    def tags(self) -> list[str]:
        """Flat tags, e.g. ``['bright', 'slow motion', 'camera: pan left', 'blue', 'white']``."""
        return [self.brightness, f"{self.motion} motion", f"camera: {self.camera_motion}", *self.colours]

    def caption(self) -> str:
        """One sentence, e.g. "a bright, slow-moving shot with a static camera; dominant colours: blue, white"."""
        motion = {"static": "static", "slow": "slow-moving", "moderate": "moderately moving", "fast": "fast-moving"}
        kind, _, direction = self.camera_motion.partition(" ")
        verb = {"pan": "panning", "tilt": "tilting", "zoom": "zooming"}.get(kind)
        cam = f"the camera {verb} {direction}" if verb else f"a {self.camera_motion} camera"
        text = f"a {self.brightness}, {motion[self.motion]} shot with {cam}"
        if self.colours:
            text += "; dominant colours: " + ", ".join(self.colours)
        return text


def describe(frames: np.ndarray, fps: float) -> Descriptors:
    """Describe RGB ``frames`` ``[T, H, W, 3]`` uint8 sampled at ``fps``."""
    x = np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
        raise ValueError(f"frames must be [T, H, W, 3], got {x.shape}")
    gray = motion_gray(x)
    bright = float(luma(x).mean())
    motion = float(np.abs(np.diff(gray, axis=0)).mean()) if len(x) > 1 else 0.0
    shares = colour_shares(x)
    gm = global_motion(gray)
    moves = camera_moves(gm)
    return Descriptors(
        brightness=brightness_level(bright),
        motion=motion_level(motion),
        camera_motion=camera_motion(gm),
        colours=[name for name, share in list(shares.items())[:3] if share >= 0.05],
        brightness_mean=bright,
        motion_mean=motion,
        colour_shares=shares,
        pan_x=float(moves[:, 0].sum()),
        pan_y=float(moves[:, 1].sum()),
        zoom=float(moves[:, 2].sum()),
    )


def brightness_level(mean_luma: float) -> str:
    """dark < 60 <= normal <= 180 < bright (mean luma, 0-255)."""
    return "dark" if mean_luma < 60 else "bright" if mean_luma > 180 else "normal"


def motion_level(motion_mean: float) -> str:
    """Mean abs grey difference of consecutive frames -> static (<0.5) / slow (<3) / moderate (<10) / fast."""
    if motion_mean < 0.5:
        return "static"
    return "slow" if motion_mean < 3 else "moderate" if motion_mean < 10 else "fast"


def motion_gray(frames: np.ndarray) -> np.ndarray:
    """Grey ``[T, h, w]`` float32 frames with long side :data:`MOTION_SIDE`, the scale motion is measured at."""
    x = np.asarray(frames)
    h, w = fit_size(x.shape[1], x.shape[2], MOTION_SIDE)
    return resize_area(luma(x)[..., None], h, w)[..., 0]


# --- colours ---------------------------------------------------------------------------------


def colour_shares(frames: np.ndarray, max_side: int = 64) -> dict[str, float]:
    """Share of pixels per palette colour, largest first (zero shares omitted).

    Each pixel is named by rules on hue/saturation/value (a quantised HSV histogram), which is
    fast, deterministic, and gives names that read well in captions.
    """
    x = np.asarray(frames)
    h, w = fit_size(x.shape[1], x.shape[2], max_side)
    rgb = resize_area(x, h, w) / 255.0
    hue, sat, val = rgb_to_hsv(rgb)
    names = np.full(hue.shape, COLOUR_NAMES.index("grey"), dtype=np.int8)
    chroma = sat * val
    achrom = (sat < 0.2) | (chroma < 0.12)
    names[achrom & (val < 0.2)] = COLOUR_NAMES.index("black")
    names[achrom & (val > 0.8)] = COLOUR_NAMES.index("white")
    names[~achrom & (val < 0.15)] = COLOUR_NAMES.index("black")
    col = ~achrom & (val >= 0.15)
    hue_deg = hue * 360.0
    for name, lo, hi in (
        ("red", 345, 360), ("red", 0, 15), ("orange", 15, 40), ("yellow", 40, 70), ("green", 70, 165),
        ("cyan", 165, 195), ("blue", 195, 255), ("purple", 255, 290), ("pink", 290, 345),
    ):  # fmt: skip
        names[col & (hue_deg >= lo) & (hue_deg < hi)] = COLOUR_NAMES.index(name)
    names[col & (hue_deg >= 10) & (hue_deg < 45) & (val < 0.6)] = COLOUR_NAMES.index("brown")  # dark orange
    counts = np.bincount(names.ravel(), minlength=len(COLOUR_NAMES)) / names.size
    order = sorted(range(len(COLOUR_NAMES)), key=lambda i: (-counts[i], i))
    return {COLOUR_NAMES[i]: round(float(counts[i]), 4) for i in order if counts[i] > 0}


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (0-1), saturation, value of float RGB ``[..., 3]`` in 0-1."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = rgb.max(-1)
    mn = rgb.min(-1)
    d = mx - mn
    safe = np.where(d > 0, d, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6.0
    h = np.where(d > 0, h, 0.0)
    s = np.where(mx > 0, d / np.where(mx > 0, mx, 1.0), 0.0)
    return h.astype(np.float32), s.astype(np.float32), mx.astype(np.float32)


# --- global motion ---------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _hann(h: int, w: int) -> np.ndarray:
    return np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)


def phase_correlate(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Shift ``(dx, dy, peak)`` in pixels that moves grey ``a`` onto ``b`` (content of ``b`` = ``a`` moved by dx, dy).

    ``peak`` (0-1) is the correlation peak height: near 1 for a clean translation, near 0 for
    unrelated or featureless images. Sub-pixel by a parabola through the peak's neighbours.
    """
    dx, dy, peak = _phase_correlate_batch(np.asarray(a, np.float32)[None], np.asarray(b, np.float32)[None])[0]
    return float(dx), float(dy), float(peak)


def _spectra(x: np.ndarray) -> np.ndarray:
    """Windowed, mean-removed rFFT of grey images ``[..., h, w]`` (each frame transformed once)."""
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    return np.fft.rfft2(x * _hann(*x.shape[-2:]))


def _phase_correlate_batch(a: np.ndarray, b: np.ndarray, fa: np.ndarray | None = None, fb: np.ndarray | None = None) -> np.ndarray:
    """Vectorised :func:`phase_correlate` over leading axes: ``[..., h, w]`` -> ``[..., 3]``."""
    fa = _spectra(a) if fa is None else fa
    fb = _spectra(b) if fb is None else fb
    cross = fb * np.conj(fa)
    cross /= np.abs(cross) + 1e-6
    h, w = a.shape[-2:]
    r = np.fft.irfft2(cross, s=(h, w)).reshape(-1, h, w)
    flat = r.reshape(len(r), -1).argmax(1)
    iy, ix = flat // w, flat % w
    n = np.arange(len(r))
    c0 = r[n, iy, ix]

    def refine(cm: np.ndarray, cp: np.ndarray) -> np.ndarray:
        den = cm - 2 * c0 + cp
        safe = np.where(np.abs(den) < 1e-12, 1.0, den)
        return np.where(np.abs(den) < 1e-12, 0.0, np.clip(0.5 * (cm - cp) / safe, -0.5, 0.5))

    dy = iy + refine(r[n, (iy - 1) % h, ix], r[n, (iy + 1) % h, ix])
    dx = ix + refine(r[n, iy, (ix - 1) % w], r[n, iy, (ix + 1) % w])
    dy = np.where(dy > h / 2, dy - h, dy)
    dx = np.where(dx > w / 2, dx - w, dx)
    return np.stack([dx, dy, c0], axis=-1).reshape(*a.shape[:-2], 3)


def global_motion(gray: np.ndarray) -> np.ndarray:
    """Per consecutive pair of grey frames ``[T, h, w]``: ``[T-1, 5]`` = dx, dy, zoom, peak, agree.

    dx/dy: whole-frame content shift as a fraction of frame width/height (+ = right/down);
    zoom: log scale change (+ = content grows); peak: phase-correlation confidence (0-1);
    agree: share of 3x3 overlapping half-size tiles whose own shift fits "that translation +
    that zoom" within a pixel. The camera moved only when most tiles agree; a robot arm or a
    walking person moves a few tiles, and noise/cuts give low peaks and random shifts.
    """
    g = np.asarray(gray, dtype=np.float32)
    t, h, w = g.shape
    if t < 2:
        return np.zeros((0, 5))
    spec = _spectra(g)
    whole = _phase_correlate_batch(g[:-1], g[1:], spec[:-1], spec[1:])
    th, tw = h // 2, w // 2
    ys, xs = [0, (h - th) // 2, h - th], [0, (w - tw) // 2, w - tw]
    tiles = np.stack([g[:, y : y + th, x : x + tw] for y in ys for x in xs], axis=1)  # [T, 9, th, tw]
    tspec = _spectra(tiles)
    local = _phase_correlate_batch(tiles[:-1], tiles[1:], tspec[:-1], tspec[1:])  # [T-1, 9, 3]
    centres = np.array([(x + tw / 2 - w / 2, y + th / 2 - h / 2) for y in ys for x in xs])  # [9, 2]
    out = np.zeros((t - 1, 5))
    for i in range(t - 1):
        shift = whole[i, :2]
        k, inliers = _fit_zoom(local[i, :, :2], np.clip(local[i, :, 2], 0, None) + 1e-3, centres)
        predicted = shift + k * centres
        tol = max(1.0, 0.2 * float(np.hypot(*shift)))
        agree = float((np.linalg.norm(local[i, :, :2] - predicted, axis=1) < tol).mean())
        zoom = float(np.log1p(np.clip(k, -0.5, 0.5))) if inliers >= 6 else 0.0
        out[i] = shift[0] / w, shift[1] / h, zoom, whole[i, 2], agree
    return out


def _fit_zoom(v: np.ndarray, wts: np.ndarray, c: np.ndarray) -> tuple[float, int]:
    """Weighted least squares ``v_i = t + k * c_i`` over tiles, refit once without outliers.

    Returns the scale change ``k`` (0 when the tiles disagree) and the number of inlier tiles.
    """
    n = len(v)
    a = np.zeros((2 * n, 3))
    a[:n, 0], a[n:, 1] = 1.0, 1.0
    a[:n, 2], a[n:, 2] = c[:, 0], c[:, 1]
    b = np.concatenate([v[:, 0], v[:, 1]])
    keep = np.ones(n, bool)
    for _ in range(2):
        ww = np.sqrt(np.concatenate([wts * keep, wts * keep]))
        sol, *_ = np.linalg.lstsq(a * ww[:, None], b * ww, rcond=None)
        resid = np.hypot(*(b - a @ sol).reshape(2, n))
        keep = resid < 1.0
    return float(sol[2]), int(keep.sum())


def camera_moves(gm: np.ndarray, min_peak: float = 0.15, min_agree: float = 0.6) -> np.ndarray:
    """``[T-1, 3]`` dx, dy, zoom per pair where the camera evidently moved, zeros elsewhere."""
    gm = np.asarray(gm).reshape(-1, 5)
    ok = (gm[:, 3] >= min_peak) & (gm[:, 4] >= min_agree)
    return np.where(ok[:, None], gm[:, :3], 0.0)


def camera_motion(gm: np.ndarray, min_peak: float = 0.15, min_agree: float = 0.6) -> str:
    """Label the clip's camera motion from :func:`global_motion` rows.

    Content moving left means the camera pans right (content moving down = tilt up). Only pairs
    where the camera evidently moved count (peak >= ``min_peak`` and tiles agree); others are
    object motion, cuts or noise and count as no camera motion. "handheld" = large
    frame-to-frame translation changes with little net travel.
    """
    moves = camera_moves(gm, min_peak, min_agree)
    if len(moves) == 0:
        return "static"
    d = moves[:, :2]
    zoom = float(moves[:, 2].sum())
    net = d.sum(0)
    path = float(np.linalg.norm(d, axis=1).sum())
    jitter = float(np.median(np.linalg.norm(np.diff(d, axis=0), axis=1))) if len(d) > 2 else 0.0
    if jitter > 0.01 and path > 0.05 and np.linalg.norm(net) < 0.5 * path:
        return "handheld"
    if abs(zoom) >= 0.05 and abs(zoom) > 0.5 * np.abs(net).max():
        return "zoom in" if zoom > 0 else "zoom out"
    ax = int(np.argmax(np.abs(net)))
    if abs(net[ax]) < 0.05:
        return "static"
    if ax == 0:
        return "pan right" if net[0] < 0 else "pan left"
    return "tilt up" if net[1] > 0 else "tilt down"
