"""Deterministic H.264 MP4 from a stream of RGB frames.

Same frames in -> same bytes out (for one PyAV build), so a re-recorded episode hashes to the same
video id and ingest deduplicates it. What that takes, each found by a failing byte comparison:
- one encoder thread, fixed x264 settings, `+bitexact` muxing (no version string or timestamps);
- x264's SIMD level pinned (SSE2 on x86-64, plain C elsewhere): its AVX-512 code gave different
  bytes depending on what the process had done before (e.g. a Box2D env), and AVX2/FMA round
  floats differently from SSE2/C, so machines with different CPUs would disagree;
- RGB -> YUV 4:2:0 done here in integer numpy (BT.601 limited range, tagged as such) rather than by
  FFmpeg's swscale, which also picks SIMD code by CPU and is bit-exact across CPUs only when asked.
Frames are encoded as they arrive, never buffered.
"""

from __future__ import annotations

import platform
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from worldloom.video.streams import add_video_stream

CODEC = "libx264"
_X86 = platform.machine().lower() in ("x86_64", "amd64")
X264_OPTIONS = {"preset": "medium", "crf": "18", "threads": "1",
                "x264-params": "asm=SSE2" if _X86 else "no-asm=1"}
_BT601 = 6  # AVCOL_SPC/PRI/TRC_SMPTE170M
_TV_RANGE = 1  # AVCOL_RANGE_MPEG


class Mp4Writer:
    """`with Mp4Writer(path, fps) as w: w.write(frame)`; odd sizes are padded by one edge pixel (yuv420p)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1000)
        self.frames = 0
        self.width = self.height = 0  # encoded size (even), set by the first frame
        self._container = av.open(str(self.path), mode="w", format="mp4", options={"fflags": "+bitexact"})
        self._stream: av.VideoStream | None = None

    def write(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        stream = self._stream
        if stream is None:
            stream = self._open_stream(frame.shape[1], frame.shape[0])
        frame = _pad_even(frame)
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the episode started at {self.width}x{self.height}")
        vf = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
        vf.pts = self.frames
        self._container.mux(stream.encode(vf))
        self.frames += 1

    def _open_stream(self, width: int, height: int) -> av.VideoStream:
        stream = add_video_stream(self._container, CODEC, rate=self.fps, options=dict(X264_OPTIONS))
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        cc = stream.codec_context
        cc.thread_count = 1
        cc.colorspace = cc.color_primaries = cc.color_trc = _BT601
        cc.color_range = _TV_RANGE
        self._stream, self.width, self.height = stream, stream.width, stream.height
        return stream

    def close(self) -> None:
        try:
            if self._stream is not None:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 in integer math (planes back-to-back, as PyAV's yuv420p ndarray).

    uint16 throughout: every intermediate stays within 0..65535 (offsets keep chroma non-negative),
    which is what makes it fast. Chroma is taken from the rounded 2x2 RGB average. Even H and W.
    """
    h, w = rgb.shape[:2]
    r, g, b = (rgb[..., i].astype(np.uint16) for i in range(3))
    out = np.empty(h * w * 3 // 2, np.uint8)
    out[: h * w] = ((66 * r + 129 * g + 25 * b + 4224) >> 8).ravel()  # 4224 = rounding 128 + (16 << 8)
    cr, cg, cb = ((c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2] + 2) >> 2 for c in (r, g, b))
    q = h * w // 4
    out[h * w : h * w + q] = ((112 * cb + 32896 - 38 * cr - 74 * cg) >> 8).ravel()  # 32896 = 128 + (128 << 8)
    out[h * w + q :] = ((112 * cr + 32896 - 94 * cg - 18 * cb) >> 8).ravel()
    return out.reshape(h * 3 // 2, w)


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def frames_to_mp4(frames: np.ndarray, path: Path, fps: float) -> Path:
    """Write ``[T, H, W, 3]`` uint8 frames as one H.264 MP4 (deterministic bytes)."""
    with Mp4Writer(Path(path), fps) as writer:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame))
    return Path(path)
