"""Write small synthetic media files for tests and benchmarks.

Real encoded files (not mocks) so code under test goes through the same FFmpeg paths as user
uploads, while staying tiny and deterministic. Every function returns the written path.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from worldloom.video.streams import add_video_stream

PATTERNS = ("moving", "static", "noise")
_VIDEO_ENCODERS = ("libx264", "mpeg4")  # preference order; both present in PyAV 18 wheels


def encoder_available(name: str) -> bool:
    """True if this PyAV/FFmpeg build can encode with ``name``."""
    try:
        av.codec.Codec(name, "w")
    except Exception:  # UnknownCodecError, or a decoder-only name
        return False
    return True


def default_video_codec() -> str:
    """Best available encoder for synthetic video (H.264 if the build has libx264)."""
    for name in _VIDEO_ENCODERS:
        if encoder_available(name):
            return name
    raise RuntimeError(f"none of the encoders {_VIDEO_ENCODERS} is available in this PyAV build")


def render_frame(index: int, width: int, height: int, pattern: str = "moving", seed: int = 0) -> np.ndarray:
    """RGB uint8 frame ``index`` of ``pattern``; 'moving' = gradient plus a box that moves each frame."""
    if pattern == "noise":
        rng = np.random.default_rng(seed * 1_000_003 + index)
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = x.astype(np.uint8)
    img[..., 1] = y.astype(np.uint8)
    img[..., 2] = 128
    if pattern == "moving":
        box = max(2, min(width, height) // 4)
        bx = (index * 3) % max(1, width - box)
        by = (index * 2) % max(1, height - box)
        img[by : by + box, bx : bx + box] = 255
        img[..., 2] = (index * 8) % 256
    elif pattern != "static":
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    return img


def write_video(
    path: str | os.PathLike[str],
    width: int = 64,
    height: int = 48,
    frames: int = 24,
    fps: float = 24,
    codec: str | None = None,
    pattern: str = "moving",
    *,
    rotation: int = 0,
    faststart: bool = False,
    audio: bool = False,
    seed: int = 0,
) -> Path:
    """Encode ``frames`` frames of ``pattern`` (container from the file extension).

    ``rotation`` (clockwise degrees, as :class:`~worldloom.video.probe.VideoInfo` reports it) is
    stored as a display matrix. ``faststart`` puts the MP4 index first, so a truncated copy still
    opens (exercises the 'frames missing' path). ``audio`` adds a matching AAC sine track.
    Width and height must be even (yuv420p).
    """
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
    if frames < 1:
        raise ValueError("frames must be >= 1")
    path = Path(path)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as out:
        vs = add_video_stream(out, codec or default_video_codec(), rate=Fraction(fps).limit_denominator(100_000))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if rotation % 360:
            vs.set_display_rotation(-(rotation % 360))  # PyAV takes counter-clockwise degrees
        aus = out.add_stream("aac", rate=16_000, layout="mono") if audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(render_frame(i, width, height, pattern, seed), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if aus is not None:
            _encode_sine(out, aus, frames / fps)
    return path


def write_audio_only(path: str | os.PathLike[str], seconds: float = 1.0, rate: int = 16_000) -> Path:
    """An AAC file with a 440 Hz tone and no video stream (.m4a or .mp4)."""
    path = Path(path)
    with av.open(str(path), mode="w") as out:
        _encode_sine(out, out.add_stream("aac", rate=rate, layout="mono"), seconds)
    return path


def _encode_sine(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.rate, frame.pts = rate, 0
    out.mux(stream.encode(frame))  # PyAV re-chunks to the encoder's frame size
    out.mux(stream.encode(None))


def write_truncated(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], keep_fraction: float = 0.5
) -> Path:
    """Copy only the first ``keep_fraction`` of ``src``'s bytes, like an interrupted download."""
    if not 0 < keep_fraction < 1:
        raise ValueError(f"keep_fraction must be in (0, 1), got {keep_fraction}")
    dst = Path(dst)
    left = int(os.path.getsize(src) * keep_fraction)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while left > 0 and (chunk := fin.read(min(left, 1 << 20))):
            fout.write(chunk)
            left -= len(chunk)
    return dst


def write_random_bytes(path: str | os.PathLike[str], n: int = 4096, seed: int = 0) -> Path:
    """``n`` random bytes, e.g. named ``.mp4`` to test rejection of non-media uploads."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def write_png_bomb(path: str | os.PathLike[str], width: int = 16_000, height: int = 16_000) -> Path:
    """A valid all-black 16-bit RGBA PNG of ``width`` x ``height`` that compresses ~1000:1 (16000x16000:
    2 MB on disk, 2 GB decoded): a decoder that allocates before checking the size is the bug it finds.

    Rows are deflated in blocks ended by a full flush, so one compressed block repeats verbatim; the
    Adler-32 trailer is computed over the real rows. A second or so instead of compressing 2 GB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + width * 8)  # filter byte + RGBA 16-bit
    per_block = 64
    blocks, rest = divmod(height, per_block)
    if blocks < 2:
        raise ValueError("write_png_bomb needs height >= 128")
    block = row * per_block
    comp = zlib.compressobj(9)
    first = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)  # with the zlib header
    repeat = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)  # no history: the same for every block
    tail = comp.compress(row * rest) + comp.flush()
    adler = 1
    for _ in range(blocks):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(row * rest, adler)
    stream = first + repeat * (blocks - 1) + tail[:-4] + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    out = Path(path)
    out.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
    return out


def scene_image(seed: int = 0, height: int = 300, width: int = 400, rects: int = 250) -> np.ndarray:
    """A sharp synthetic scene (random coloured rectangles: edges everywhere) to move a camera over."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 128, np.uint8)
    for _ in range(rects):
        y, x = rng.integers(0, height), rng.integers(0, width)
        dy, dx = rng.integers(4, 40, 2)
        img[y : y + dy, x : x + dx] = rng.integers(0, 256, 3)
    return img


def pan_crops(img: np.ndarray, offsets: list[tuple[int, int]], size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Crops of ``img`` at (dx, dy) from its centre: the window moving right = a camera panning right."""
    h, w = size
    y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return np.stack([img[y0 + dy : y0 + dy + h, x0 + dx : x0 + dx + w] for dx, dy in offsets])


def pan_frames(seed: int = 0, frames: int = 32, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A sharp, smooth camera pan over :func:`scene_image` (``[T, H, W, 3]`` uint8): footage that the
    default quality filters keep; another ``seed`` is another scene."""
    offsets = [(2 * i - frames, i // 2) for i in range(frames)]
    return pan_crops(scene_image(seed, rects=250), offsets, size)
