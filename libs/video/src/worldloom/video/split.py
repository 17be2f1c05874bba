"""Shot-boundary detection and clip spans for curation.

The detector follows PySceneDetect's ``ContentDetector`` (so its thresholds and goldens carry
over) but runs on tiny frames that FFmpeg downscales while decoding: a frame's score is the mean
absolute difference of its H, S and V channels (OpenCV 8-bit convention, H in 0..179) from the
previous frame, averaged over the three channels with ``weights``. A frame whose score reaches
``threshold`` (27 by default, same 0-255 scale) starts a new shot, and cuts closer than
``min_scene_len`` frames are merged exactly as PySceneDetect's default flash filter does. Hard cuts
score 50-85 while fades change a little per frame (about 4 on fades.mp4), so fades never cut.

Downscaling with an area filter averages away the hue noise of near-black pixels, which is what
pushes PySceneDetect's own scores close to the threshold inside dark fades (testvideo.mp4
frame 691: 26.9); at the default 64 px the same frame scores 24.6, so the goldens hold with
margin (hard cuts there score 49-82).

An optional adaptive gate (``min_ratio`` > 0, off by default) also requires the score to exceed
``min_ratio`` times the mean score of the ``ratio_window`` frames on either side, like
PySceneDetect's ``AdaptiveDetector``: it suppresses cuts during fast camera motion.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from worldloom.video.decode import FrameReader, video_fps_and_count
from worldloom.video.errors import VideoRejected

PathLike = str | os.PathLike[str]

_BATCH = 64  # frames per vectorised HSV/score step: amortises numpy call overhead


@dataclass(frozen=True, slots=True)
class Span:
    """Frames ``start_frame <= i < end_frame`` and their time range in seconds from stream start."""

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class SplitConfig:
    """How :func:`split_video` cuts a video into clips (defaults: shots, 1-10 s clips; stride: 4 s every
    4 s). These are the defaults curation runs with: the curate API's split section takes them from here."""

    method: Literal["shots", "stride"] = "shots"
    #: content score (0-255 scale, PySceneDetect ContentDetector's) at which a cut is declared.
    threshold: float = 27.0
    #: cuts closer than this many frames to the previous one are merged (PySceneDetect default).
    min_scene_len: int = 15
    #: weights of the hue, saturation and value differences.
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: adaptive gate: score must also be >= min_ratio x mean of its neighbours (0 = off).
    min_ratio: float = 0.0
    ratio_window: int = 2
    #: longest side of the frames the detector looks at.
    analysis_side: int = 64
    #: skip deblocking on non-reference frames while analysing (faster, scores change < 0.2).
    fast_decode: bool = True
    #: multi-threaded decoding; turn off when running one worker process per core.
    decode_threads: bool = True
    #: clips shorter than this (after trimming) are dropped; longer ones are split evenly.
    min_clip_s: float = 1.0
    max_clip_s: float = 10.0
    #: seconds removed from both ends of each shot, so transition frames stay out of clips.
    trim_s: float = 0.1
    #: method="stride": clip length and step between clip starts.
    stride_clip_s: float = 4.0
    stride_s: float = 4.0

    def __post_init__(self) -> None:
        if self.method not in ("shots", "stride"):
            raise ValueError(f"method must be 'shots' or 'stride', got {self.method!r}")
        if self.threshold <= 0 or self.min_scene_len < 0 or self.analysis_side < 8:
            raise ValueError("need threshold > 0, min_scene_len >= 0 and analysis_side >= 8")
        if len(self.weights) != 3 or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(f"weights must be three non-negative numbers, not all 0: {self.weights!r}")
        if self.min_ratio < 0 or self.ratio_window < 1:
            raise ValueError("need min_ratio >= 0 and ratio_window >= 1")
        if not 0 <= self.min_clip_s <= self.max_clip_s or self.max_clip_s <= 0 or self.trim_s < 0:
            raise ValueError("need 0 <= min_clip_s <= max_clip_s, max_clip_s > 0 and trim_s >= 0")
        if self.stride_clip_s <= 0 or self.stride_s <= 0:
            raise ValueError("stride_clip_s and stride_s must be > 0")


class ShotList(list[Span]):
    """A list of spans plus how the analysis went.

    ``decoded_frames`` is how many frames could be decoded; ``error`` is None for a clean file, or
    says why decoding stopped early (the spans then cover only the decodable part).
    """

    def __init__(
        self,
        spans: Iterable[Span] = (),
        *,
        fps: float = 0.0,
        decoded_frames: int = 0,
        expected_frames: int = 0,
        error: str | None = None,
        cuts: list[int] | None = None,
        scores: np.ndarray | None = None,
    ) -> None:
        super().__init__(spans)
        self.fps = fps
        self.decoded_frames = decoded_frames
        self.expected_frames = expected_frames
        self.error = error
        self.cuts: list[int] = list(cuts or [])
        self.scores: np.ndarray = scores if scores is not None else np.zeros(0, np.float32)

    def with_spans(self, spans: Iterable[Span]) -> ShotList:
        """Same analysis facts, other spans (e.g. the clips made from these shots)."""
        return ShotList(
            spans,
            fps=self.fps,
            decoded_frames=self.decoded_frames,
            expected_frames=self.expected_frames,
            error=self.error,
            cuts=self.cuts,
            scores=self.scores,
        )


# -- public API ------------------------------------------------------------------------------------


def detect_shots(path: PathLike, config: SplitConfig = SplitConfig()) -> ShotList:
    """Shots covering every decodable frame of ``path``, split at detected hard cuts.

    Raises :class:`VideoRejected` if the file cannot be opened or no frame decodes; a file that
    breaks mid-stream returns the shots of its decodable part with ``error`` set.
    """
    reader = FrameReader(
        path,
        max_side=config.analysis_side,
        fast=config.fast_decode,
        threads=config.decode_threads,
        on_error="stop",
    )
    scorer = _ContentScorer(config.weights)
    pts: list[float] = []
    with reader:
        for frame in reader:
            scorer.add(frame.image)
            pts.append(frame.pts_s)
    if not pts:
        raise VideoRejected("truncated", f"No frame could be decoded ({reader.error or 'empty stream'}).")
    scores = scorer.finish()
    cuts = find_cuts(scores, config)
    fps = reader.info.fps
    bounds = [0, *cuts, len(pts)]
    end_time = pts[-1] + 1.0 / fps

    def t(i: int) -> float:
        return pts[i] if i < len(pts) else end_time

    spans = [Span(a, b, t(a), t(b)) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    return ShotList(
        spans,
        fps=fps,
        decoded_frames=len(pts),
        expected_frames=reader.info.expected_frames,
        error=reader.error,
        cuts=cuts,
        scores=scores,
    )


def split_video(path: PathLike, config: SplitConfig = SplitConfig()) -> ShotList:
    """Clip spans for ``path``: detected shots turned into clips, or a fixed stride.

    The stride method does not decode: it trusts the declared (or demuxed) frame count, so on a
    damaged file its spans may reach past the decodable part; use "shots" to find out.
    """
    if config.method == "stride":
        fps, count = video_fps_and_count(path)
        clips = fixed_stride(count, fps, config.stride_clip_s, config.stride_s)
        return ShotList(clips, fps=fps, expected_frames=count)
    shots = detect_shots(path, config)
    return shots.with_spans(make_clips(shots, shots.fps, config.min_clip_s, config.max_clip_s, config.trim_s))


def fixed_stride(n_frames: int, fps: float, clip_len_s: float, stride_s: float) -> list[Span]:
    """Full-length clips of ``clip_len_s`` starting every ``stride_s`` (overlap if stride < len).

    Starts are rounded from exact multiples of ``stride_s`` so they do not drift at 29.97 fps; a
    tail shorter than one clip is left out.
    """
    if fps <= 0 or clip_len_s <= 0 or stride_s <= 0:
        raise ValueError("fps, clip_len_s and stride_s must be > 0")
    clip_f = max(1, round(clip_len_s * fps))
    spans: list[Span] = []
    k = 0
    while (start := round(k * stride_s * fps)) + clip_f <= n_frames:
        spans.append(Span(start, start + clip_f, start / fps, (start + clip_f) / fps))
        k += 1
    return spans


def make_clips(spans: list[Span], fps: float, min_len_s: float, max_len_s: float, trim_s: float) -> list[Span]:
    """Training clips from shots: trim both ends, drop short ones, split long ones evenly.

    Trimming ``trim_s`` (rounded to frames) keeps transition frames out; a shot still shorter
    than ``min_len_s`` afterwards (zero-length shots included) is dropped. A longer shot is cut
    into the fewest equal pieces of at most ``max_len_s``; when equal pieces would fall below
    ``min_len_s`` it yields as many ``max_len_s`` clips as fit, centred in the shot. Times are
    interpolated inside each shot, so pts-based shot times are kept at the shot boundaries.
    """
    if fps <= 0 or max_len_s <= 0 or not 0 <= min_len_s <= max_len_s or trim_s < 0:
        raise ValueError("need fps > 0, 0 <= min_len_s <= max_len_s, max_len_s > 0, trim_s >= 0")
    min_f = max(1, math.ceil(min_len_s * fps - 1e-6))
    max_f = max(1, math.floor(max_len_s * fps + 1e-6))
    trim_f = round(trim_s * fps)
    clips: list[Span] = []
    for span in spans:
        start, end = span.start_frame + trim_f, span.end_frame - trim_f
        length = end - start
        if length < min_f:
            continue
        pieces = math.ceil(length / max_f)
        if pieces * min_f <= length:
            cuts = [start + round(k * length / pieces) for k in range(pieces + 1)]
        else:  # equal pieces would be too short: whole max-length clips, leftover at both ends
            pieces = length // max_f
            first = start + (length - pieces * max_f) // 2
            cuts = [first + k * max_f for k in range(pieces + 1)]
        clips.extend(Span(a, b, _time_in(span, a), _time_in(span, b)) for a, b in zip(cuts, cuts[1:], strict=False))
    return clips


def find_cuts(scores: np.ndarray, config: SplitConfig = SplitConfig()) -> list[int]:
    """Cut frames from per-frame content scores (re-tune thresholds without decoding again)."""
    scores = np.asarray(scores, dtype=np.float64)
    above = scores >= config.threshold
    if config.min_ratio > 0:
        above &= scores >= config.min_ratio * _neighbour_mean(scores, config.ratio_window)
    return flash_merge(above, config.min_scene_len)


def flash_merge(above: np.ndarray | list[bool], min_len: int) -> list[int]:
    """Cut frames from per-frame 'score above threshold' flags, PySceneDetect's MERGE filter.

    A cut needs ``min_len`` frames since the last above-threshold frame (counting from frame 0).
    Cuts that come too soon start a merge: the run of close cuts is replaced by its last frame
    once it lasted ``min_len`` frames and a below-threshold frame ``min_len`` after it arrives.
    """
    if min_len <= 0:
        return [i for i, a in enumerate(above) if a]
    cuts: list[int] = []
    last_above = 0
    merge_enabled = merging = False
    merge_start = 0
    for i, is_above in enumerate(above):
        length_met = i - last_above >= min_len
        if is_above:
            last_above = i
        if merging:
            if length_met and not is_above and last_above - merge_start >= min_len:
                merging = False
                cuts.append(last_above)
            continue
        if not is_above:
            continue
        if length_met:
            merge_enabled = True
            cuts.append(i)
        elif merge_enabled:
            merging, merge_start = True, i
    return cuts


# -- scoring ---------------------------------------------------------------------------------------

# OpenCV's 8-bit RGB->HSV (fixed point, hsv_shift = 12) folded into lookup tables, so scores
# match ContentDetector's exactly and each pixel costs one gather for S and one for H.
def _hsv_tables() -> tuple[np.ndarray, np.ndarray]:
    shift, rnd = 12, 1 << 11
    i = np.arange(256, dtype=np.float64)
    i[0] = 1.0
    sdiv = np.round((255 << shift) / i).astype(np.int64)
    hdiv = np.round((180 << shift) / (6.0 * i)).astype(np.int64)
    sdiv[0] = hdiv[0] = 0
    d = np.arange(256)[None, :]
    s_lut = (d * sdiv[:, None] + rnd) >> shift  # [v, d]
    num = np.arange(-255, 5 * 255 + 1)[:, None]  # hue numerator (see hsv_planes) spans -255..1275
    h_lut = (num * hdiv[d] + rnd) >> shift  # [num + 255, d]
    h_lut += (h_lut < 0) * 180
    return s_lut.astype(np.int16).ravel(), h_lut.astype(np.int16).ravel()


_S_LUT, _H_LUT = _hsv_tables()


def hsv_planes(rgb: np.ndarray) -> np.ndarray:
    """``[B, H, W, 3]`` uint8 RGB -> ``[B, 3, H*W]`` int16 H (0..179), S, V as OpenCV computes them."""
    flat = rgb.reshape(rgb.shape[0], -1, 3)
    r = flat[..., 0].astype(np.int16)
    g = flat[..., 1].astype(np.int16)
    b = flat[..., 2].astype(np.int16)
    v = np.maximum(np.maximum(r, g), b)
    d = v - np.minimum(np.minimum(r, g), b)
    d32 = d.astype(np.int32)
    out = np.empty((flat.shape[0], 3, flat.shape[1]), np.int16)
    out[:, 2] = v
    np.take(_S_LUT, (v.astype(np.int32) << 8) | d32, out=out[:, 1])
    num = np.where(v == r, g - b, np.where(v == g, b - r + 2 * d, r - g + 4 * d))
    np.take(_H_LUT, ((num.astype(np.int32) + 255) << 8) | d32, out=out[:, 0])
    return out


class _ContentScorer:
    """Per-frame content scores, computed a batch of frames at a time."""

    def __init__(self, weights: tuple[float, float, float]) -> None:
        w = np.asarray(weights, dtype=np.float64)
        self._w = w / np.abs(w).sum()
        self._buf: list[np.ndarray] = []
        self._prev: np.ndarray | None = None
        self._out: list[np.ndarray] = []

    def add(self, image: np.ndarray) -> None:
        self._buf.append(image)
        if len(self._buf) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        hsv = hsv_planes(np.stack(self._buf))
        self._buf.clear()
        if self._prev is None:
            self._out.append(np.zeros(1))
        else:
            hsv = np.concatenate([self._prev[None], hsv])
        self._prev = hsv[-1]
        if len(hsv) > 1:
            diffs = np.abs(np.diff(hsv, axis=0)).mean(axis=2)  # [B, 3] mean abs diff per channel
            self._out.append(diffs @ self._w)

    def finish(self) -> np.ndarray:
        if self._buf:
            self._flush()
        return np.concatenate(self._out).astype(np.float32) if self._out else np.zeros(0, np.float32)


def _neighbour_mean(scores: np.ndarray, window: int) -> np.ndarray:
    """Mean score of the ``window`` frames before and after each frame (itself excluded)."""
    padded = np.pad(scores.astype(np.float64), window, mode="edge")
    csum = np.concatenate([[0.0], np.cumsum(padded)])
    n = len(scores)
    total = csum[2 * window + 1 : 2 * window + 1 + n] - csum[:n]
    return (total - scores) / (2 * window)


def _time_in(span: Span, frame: int) -> float:
    if span.end_frame == span.start_frame:
        return span.start_s
    return span.start_s + (frame - span.start_frame) * (span.end_s - span.start_s) / (span.end_frame - span.start_frame)


__all__ = [
    "ShotList",
    "Span",
    "SplitConfig",
    "detect_shots",
    "find_cuts",
    "fixed_stride",
    "flash_merge",
    "hsv_planes",
    "make_clips",
    "split_video",
]
