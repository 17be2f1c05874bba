"""Cut exact frame ranges out of a video and write upright H.264 renditions, thumbnails and GIFs.

Frame indices are positions in presentation order counted from the stream's first frame (what
:func:`~worldloom.video.probe.probe` counts), never timestamps: files like ``delayed_start.mp4``
start at a non-zero PTS and B-frame streams deliver packets out of order. We map index -> PTS
from the demuxed packets (cheap, no decoding), seek to the keyframe before the range and decode
forward. Decoding dominates the cost, so :func:`transcode_renditions` writes several outputs
(e.g. a 256p preview and a 64x64 training clip) from one decode pass.

Outputs are libx264/yuv420p MP4s (even sizes), timestamps from 0 at a constant frame rate, and
display rotation is baked into the pixels (no rotation metadata), because training code reads
raw pixels and never looks at display matrices.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, cast

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from worldloom.video.limits import open_input
from worldloom.video.streams import add_video_stream

# swscale's bilinear filter widens with the scale factor, so it anti-aliases downscales like AREA
# does, at about half the cost on 720p -> 256p (measured); it is the transcode hot spot.
SCALER = "BILINEAR"

PathLike = str | os.PathLike[str]

#: Packets demuxed past ``end_frame`` so that B-frame reordering cannot hide a PTS of the range.
_REORDER_MARGIN = 32


@dataclass(frozen=True)
class ClipFile:
    """A written clip: what a catalogue row needs without probing the file again."""

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float


@dataclass(frozen=True)
class RenditionSpec:
    """One output of :func:`transcode_renditions`.

    Size, first match wins: ``square=N`` centre-crops to a square and scales to NxN (training
    rendition); ``width`` and/or ``height`` (the missing one keeps the aspect ratio);
    ``short_side``; else the upright source size. Sizes are rounded to even numbers (yuv420p).
    ``fps`` resamples to a constant rate by dropping/duplicating frames; None keeps the source rate.
    """

    path: PathLike
    width: int | None = None
    height: int | None = None
    short_side: int | None = None
    square: int | None = None
    fps: float | None = None
    crf: int = 23
    preset: str = "veryfast"


def transcode_clip(
    src: PathLike,
    dst: PathLike,
    start_frame: int,
    end_frame: int,
    *,
    width: int | None = None,
    height: int | None = None,
    short_side: int | None = None,
    square: int | None = None,
    fps: float | None = None,
    crf: int = 23,
    preset: str = "veryfast",
) -> ClipFile:
    """Write frames ``[start_frame, end_frame)`` of ``src`` to ``dst`` (see :class:`RenditionSpec`)."""
    spec = RenditionSpec(dst, width, height, short_side, square, fps, crf, preset)
    return transcode_renditions(src, start_frame, end_frame, [spec])[0]


def transcode_renditions(
    src: PathLike, start_frame: int, end_frame: int, outputs: Sequence[RenditionSpec]
) -> list[ClipFile]:
    """Write every rendition in ``outputs`` from a single decode of ``[start_frame, end_frame)``.

    ``end_frame`` past the end of the stream is clamped; an empty range raises ``ValueError``.
    """
    if start_frame < 0 or end_frame <= start_frame:
        raise ValueError(f"need 0 <= start_frame < end_frame, got [{start_frame}, {end_frame})")
    if not outputs:
        return []
    with open_input(src) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
        pts_list = _pts_index(container, stream, end_frame)
        available = len(pts_list) if pts_list is not None else None
        end = min(end_frame, available) if available is not None else end_frame
        if start_frame >= end:
            raise ValueError(f"start_frame {start_frame} is past the last frame ({available} frames)")

        writers: list[_Writer] = []
        try:
            for idx, frame in _iter_range(container, stream, pts_list, start_frame, end):
                if not writers:  # first frame: now we know the rotation and the size
                    rotation = _clockwise_rotation(frame, stream)
                    for spec in outputs:  # appended one by one so a failure still closes the others
                        writers.append(_Writer(spec, frame, rotation, src_rate, end - start_frame))
                for w in writers:
                    w.push(idx - start_frame, frame)
            if not writers:
                raise ValueError(f"no frames decoded in [{start_frame}, {end})")
            return [w.close() for w in writers]
        except BaseException:
            for w in writers:
                w.abort()
            raise


@dataclass(frozen=True)
class ClipJob:
    """One clip to cut in a multi-clip pass: ``[start_frame, end_frame)`` into ``outputs``."""

    start_frame: int
    end_frame: int
    outputs: Sequence[RenditionSpec]


def transcode_clips(src: PathLike, jobs: Sequence[ClipJob]) -> list[list[ClipFile] | Exception]:
    """Cut many clips of one video in ONE sequential decode pass (curation's hot path).

    Cutting clips one by one decodes from the keyframe before each clip and re-opens the file every
    time; for a video split into many shots that costs far more than decoding it once. Result i is
    job i's ClipFiles, or the exception that stopped that job (the other clips are still written).
    """
    results: list[list[ClipFile] | Exception | None] = [None] * len(jobs)
    if not jobs:
        return []
    need = _shared_short_side([spec for job in jobs for spec in job.outputs])
    shrink = VideoReformatter()
    order = sorted(range(len(jobs)), key=lambda i: jobs[i].start_frame)
    last = max(j.end_frame for j in jobs)
    active: dict[int, list[_Writer]] = {}
    nxt = 0
    with open_input(src) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
        rotation: int | None = None
        try:
            for idx, frame in enumerate(container.decode(stream)):
                if idx >= last:
                    break
                if rotation is None:
                    rotation = _clockwise_rotation(frame, stream)
                starting = nxt < len(order) and jobs[order[nxt]].start_frame <= idx
                if not active and not starting:
                    continue  # between clips (trimmed ends, dropped short shots): decode only
                if need and min(frame.width, frame.height) > need:
                    # one full-resolution scale per frame, shared by every rendition (swscale is the
                    # hot spot; each rendition then scales the small frame)
                    k = need / min(frame.width, frame.height)
                    frame = shrink.reformat(frame, width=_even(frame.width * k), height=_even(frame.height * k),
                                            format="yuv420p", interpolation=SCALER)
                while nxt < len(order) and jobs[order[nxt]].start_frame <= idx:
                    i = order[nxt]
                    nxt += 1
                    if jobs[i].end_frame <= idx:  # empty or already passed
                        results[i] = ValueError(f"empty range [{jobs[i].start_frame}, {jobs[i].end_frame})")
                        continue
                    try:
                        active[i] = [_Writer(spec, frame, rotation, src_rate, jobs[i].end_frame - jobs[i].start_frame)
                                     for spec in jobs[i].outputs]
                    except Exception as exc:
                        results[i] = exc
                for i in list(active):
                    job = jobs[i]
                    try:
                        for w in active[i]:
                            w.push(idx - job.start_frame, frame)
                        if idx + 1 >= job.end_frame:
                            results[i] = [w.close() for w in active.pop(i)]
                    except Exception as exc:
                        for w in active.pop(i):
                            w.abort()
                        results[i] = exc
        except av.FFmpegError as exc:  # the video breaks mid-stream: unfinished clips fail, done ones stay
            for i, writers in active.items():
                for w in writers:
                    w.abort()
                results[i] = exc
            active.clear()
        for i, writers in active.items():  # stream ended before these clips did: keep what was decoded
            try:
                results[i] = [w.close() for w in writers]
            except Exception as exc:
                results[i] = exc
    return [r if r is not None else ValueError("clip lies past the end of the video") for r in results]


def _shared_short_side(specs: Sequence[RenditionSpec]) -> int | None:
    """The short side every rendition can be made from (None: some rendition needs the full frame)."""
    sides = []
    for spec in specs:
        side = spec.short_side or spec.square
        if not side or spec.width or spec.height:
            return None
        sides.append(side)
    return max(sides) if sides else None


def write_thumbnail(frame: np.ndarray, path: PathLike, max_side: int = 256, quality: int = 3) -> Path:
    """Save an RGB frame scaled to fit ``max_side`` as JPEG (``.jpg``/``.jpeg``, mjpeg q=``quality``) or PNG.

    Uses PyAV's image encoders so no imaging library is needed.
    """
    path = Path(path)
    h, w = frame.shape[:2]
    tw, th = _fit(w, h, max_side)
    src = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[..., :3], dtype=np.uint8), format="rgb24")
    codec: Literal["mjpeg", "png"]
    if path.suffix.lower() in (".jpg", ".jpeg"):
        codec, fmt = "mjpeg", "yuvj420p"
        tw, th = max(2, tw - tw % 2), max(2, th - th % 2)
    elif path.suffix.lower() == ".png":
        codec, fmt = "png", "rgb24"
    else:
        raise ValueError(f"thumbnail must be .jpg/.jpeg/.png, got {path.name}")
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = tw, th, fmt, Fraction(1, 25)
    if codec == "mjpeg":
        ctx.options = {"qmin": str(quality), "qmax": str(quality)}
    img = src.reformat(width=tw, height=th, format=fmt, interpolation="AREA")
    packets = list(ctx.encode(img)) + list(ctx.encode(None))
    path.write_bytes(b"".join(bytes(p) for p in packets))
    return path


def write_gif(frames: Sequence[np.ndarray] | np.ndarray, path: PathLike, fps: float, max_side: int = 160) -> Path:
    """Animated, looping GIF preview of RGB ``frames`` (keep it to ~8-16 frames).

    One adaptive 256-colour palette for all frames (most frequent 4-bit-per-channel colours),
    which looks far better than the encoder's fixed 3-3-2 palette and keeps colours stable.
    """
    if len(frames) == 0:
        raise ValueError("write_gif needs at least one frame")
    path = Path(path)
    h, w = frames[0].shape[:2]
    tw, th = _fit(w, h, max_side)
    scaler = VideoReformatter()
    small = np.stack(
        [
            scaler.reformat(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(f[..., :3], dtype=np.uint8), format="rgb24"),
                width=tw,
                height=th,
                format="rgb24",
                interpolation="AREA",
            ).to_ndarray()
            for f in frames
        ]
    )
    indices, palette = _quantise(small)
    argb = np.zeros((256, 4), np.uint8)
    argb[:, 0] = 255
    argb[: len(palette), 1:] = palette
    with av.open(str(path), mode="w", format="gif") as out:
        stream = add_video_stream(out, "gif", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = tw, th, "pal8"
        for i, img in enumerate(indices):
            # pal8 takes an (indices, ARGB palette) pair, as PyAV documents; its stub admits only an array
            pal8 = cast(np.ndarray, (np.ascontiguousarray(img), argb))
            vf = av.VideoFrame.from_ndarray(pal8, format="pal8")
            vf.pts = i
            out.mux(stream.encode(vf))
        out.mux(stream.encode(None))
    return path


# --- internals -------------------------------------------------------------------------------


def _pts_index(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, end_frame: int
) -> list[int] | None:
    """Sorted packet PTS up to ``end_frame`` (+ reorder margin): index i <-> the i-th smallest PTS.

    None when some packet has no PTS (e.g. raw streams); callers then count decoded frames.
    """
    pts: list[int] = []
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if packet.pts is None:
            return None
        pts.append(packet.pts)
        if len(pts) >= end_frame + _REORDER_MARGIN:
            break
    pts.sort()
    return pts


def _iter_range(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    pts_list: list[int] | None,
    start: int,
    end: int,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(index, frame)`` for exactly ``start <= index < end``.

    Seeks to the keyframe at or before the start PTS; if the seek overshoots or frame PTS do not
    match packet PTS, falls back to decoding from the beginning and counting frames.
    """
    if pts_list is not None:
        index_of = {p: i for i, p in enumerate(pts_list)}
        container.seek(pts_list[start], stream=stream, backward=True, any_frame=False)
        expected = start
        ok = True
        for frame in container.decode(stream):
            idx = index_of.get(frame.pts) if frame.pts is not None else None
            if idx is None or idx > expected:  # unknown PTS, overshoot, or a dropped frame
                ok = False
                break
            if idx < expected:
                continue
            yield idx, frame
            expected += 1
            if expected >= end:
                return
        if ok:
            return  # stream ended early; caller sees fewer frames
        if expected > start:
            raise RuntimeError(f"frame indices broke off after frame {expected - 1}; cannot cut exactly")
    container.seek(0, stream=stream, backward=True, any_frame=False)  # count from the very first frame
    for idx, frame in enumerate(container.decode(stream)):
        if idx >= end:
            return
        if idx >= start:
            yield idx, frame


def _clockwise_rotation(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Display rotation in clockwise degrees (probe's convention): frame display matrix, else ``rotate`` tag."""
    ccw = getattr(frame, "rotation", 0) or 0
    if ccw:
        return int(round(-ccw / 90.0)) * 90 % 360
    try:
        return int(round(float(stream.metadata.get("rotate", 0)) / 90.0)) * 90 % 360
    except ValueError:
        return 0


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def _fit(w: int, h: int, max_side: int) -> tuple[int, int]:
    """Size that fits in ``max_side`` keeping the aspect ratio; never upscales."""
    s = min(1.0, max_side / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def _target_size(spec: RenditionSpec, w: int, h: int) -> tuple[int, int, bool]:
    """Output (width, height, crop_square) for an upright source of ``w`` x ``h``."""
    if spec.square:
        n = _even(spec.square)
        return n, n, True
    if spec.width and spec.height:
        return _even(spec.width), _even(spec.height), False
    if spec.width:
        return _even(spec.width), _even(spec.width * h / w), False
    if spec.height:
        return _even(spec.height * w / h), _even(spec.height), False
    if spec.short_side:
        s = spec.short_side / min(w, h)
        return _even(w * s), _even(h * s), False
    return _even(w - w % 2), _even(h - h % 2), False


class _Writer:
    """Encoder state for one rendition: geometry, frame-rate mapping, output container."""

    def __init__(self, spec: RenditionSpec, first: av.VideoFrame, rotation: int, src_rate: Fraction, n_src: int):
        self.spec = spec
        self.path = Path(spec.path)
        self.rotation = rotation
        sw, sh = first.width, first.height  # stored size
        uw, uh = (sh, sw) if rotation in (90, 270) else (sw, sh)  # upright size
        self.width, self.height, crop = _target_size(spec, uw, uh)
        # One swscale call from the decoded YUV frame straight to (about) the output size, in stored
        # orientation; cropping and rotating then touch only the small image. A centre square is
        # the same region before and after a 90-degree rotation.
        if crop:
            k = self.width / min(sw, sh)
            self.pre_w, self.pre_h = max(self.width, round(sw * k)), max(self.width, round(sh * k))
            self.crop_box: tuple[int, int] | None = ((self.pre_h - self.width) // 2, (self.pre_w - self.width) // 2)
        else:
            self.pre_w, self.pre_h = (self.height, self.width) if rotation in (90, 270) else (self.width, self.height)
            self.crop_box = None
        # Reusable scalers: frame.reformat() would build a new SwsContext for every frame (~4x slower).
        self.scaler, self.to_yuv = VideoReformatter(), VideoReformatter()
        self.rate = Fraction(spec.fps).limit_denominator(100_000) if spec.fps else src_rate
        # Output frame j shows source offset floor(j * src_rate / rate): constant-rate drop/duplicate.
        n_out = max(1, round(n_src * self.rate / src_rate)) if spec.fps else n_src
        ratio = src_rate / self.rate
        self.src_for_out = [min(n_src - 1, math.floor(j * ratio + Fraction(1, 10**6))) for j in range(n_out)]
        self.next_out = 0
        self.container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        self.stream = add_video_stream(
            self.container, "libx264", rate=self.rate, options={"crf": str(spec.crf), "preset": spec.preset}
        )
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"

    def push(self, offset: int, frame: av.VideoFrame) -> None:
        """Encode ``frame`` (source offset ``offset`` in the range) as many times as the rate mapping says."""
        out: av.VideoFrame | None = None
        while self.next_out < len(self.src_for_out) and self.src_for_out[self.next_out] <= offset:
            if self.src_for_out[self.next_out] == offset:
                if out is None:
                    out = self._convert(frame)
                out.pts, out.time_base = self.next_out, 1 / self.rate
                self.container.mux(self.stream.encode(out))
            self.next_out += 1

    def _convert(self, frame: av.VideoFrame) -> av.VideoFrame:
        numpy_work = self.crop_box is not None or self.rotation != 0
        fmt = "rgb24" if numpy_work else "yuv420p"
        if not numpy_work and (frame.width, frame.height, frame.format.name) == (self.pre_w, self.pre_h, "yuv420p"):
            return frame  # already the shared, pre-scaled frame: nothing to do
        scaled = self.scaler.reformat(frame, width=self.pre_w, height=self.pre_h, format=fmt, interpolation=SCALER)
        if not numpy_work:
            return scaled
        img = scaled.to_ndarray()
        if self.crop_box is not None:
            y, x = self.crop_box
            img = img[y : y + self.width, x : x + self.width]
        if self.rotation:
            img = np.rot90(img, k=-(self.rotation // 90))
        rgb = np.ascontiguousarray(img, dtype=np.uint8)
        return self.to_yuv.reformat(av.VideoFrame.from_ndarray(rgb, format="rgb24"), format="yuv420p")

    def close(self) -> ClipFile:
        self.container.mux(self.stream.encode(None))
        self.container.close()
        n = self.next_out  # frames actually encoded (fewer than planned if the source ended early)
        if n == 0:
            self.path.unlink(missing_ok=True)
            raise ValueError("no frame of the clip was decoded")
        fps = float(self.rate)
        return ClipFile(self.path, self.width, self.height, fps, n, n / fps)

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # already broken; the half-written file is removed below
            pass
        self.path.unlink(missing_ok=True)


def _quantise(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map [T,H,W,3] uint8 to palette indices with a shared palette of <= 256 colours."""
    bins = (frames[..., 0].astype(np.int32) >> 4) << 8 | (frames[..., 1].astype(np.int32) >> 4) << 4 | (
        frames[..., 2].astype(np.int32) >> 4
    )
    flat = bins.ravel()
    counts = np.bincount(flat, minlength=4096)
    sums = np.stack([np.bincount(flat, weights=frames[..., c].ravel(), minlength=4096) for c in range(3)], axis=1)
    used = np.flatnonzero(counts)
    keep = used[np.argsort(-counts[used], kind="stable")[:256]]
    palette = (sums[keep] / counts[keep, None]).round().astype(np.uint8)
    # Nearest palette entry for every 4-bit bin centre (4096 x <=256 distances: tiny).
    centres = np.stack([(np.arange(4096) >> s & 15) * 16 + 8 for s in (8, 4, 0)], axis=1).astype(np.float32)
    d = ((centres[:, None, :] - palette[None, :, :].astype(np.float32)) ** 2).sum(-1)
    lut = d.argmin(1).astype(np.uint8)
    lut[keep] = np.arange(len(keep), dtype=np.uint8)
    return lut[bins], palette
