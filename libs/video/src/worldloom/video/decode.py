"""Fast, frame-exact frame access for every curation stage (PyAV).

Decoding dominates curation cost, so this module lets FFmpeg do the heavy lifting: the decoder
runs multi-threaded (``thread_type="AUTO"``) and downscaling plus pixel-format conversion happen in
swscale through one reused :class:`~av.video.reformatter.VideoReformatter` (area filter, single
scaler thread: for small outputs thread start-up costs more than the scaling itself).

Frame indices are exact: ``Frame.index`` is the 0-based position of the frame in the decoded
(presentation-order) sequence, the same whether reached sequentially or through a seek. A seek is
used only when it saves work (a keyframe lies between the first frame and ``start_frame``); the
index of the frames decoded after it comes from a packet pre-scan (demux only, no decoding) that
maps every presentation timestamp to its position, so variable frame rate files stay exact.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import av
import av.logging
import numpy as np
from av.video.reformatter import VideoReformatter

from worldloom.video.errors import VideoRejected
from worldloom.video.limits import DEFAULT_LIMITS, open_input

av.logging.set_level(None)  # problems surface as VideoRejected / FrameReader.error, not C stderr noise

PathLike = str | os.PathLike[str]
OnError = Literal["raise", "stop"]

#: Below this start frame a plain sequential decode is always cheaper than pre-scan + seek.
SEEK_MIN_FRAMES = 16
#: Extra packets pre-scanned past the target so B-frame reordering cannot hide its timestamp.
_REORDER_MARGIN = 32
#: Same tolerance as probe(): fewer frames than declared by more than this means truncation.
_MISSING_TOLERANCE = 2


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame.

    ``pts_s`` is seconds since the stream's first frame (0.0 for the first frame even when the
    container starts later, e.g. delayed_start.mp4); ``pts_s_abs`` is the raw container time.
    ``image`` is uint8 HxWx3 RGB, or HxW for ``gray=True``.
    """

    index: int
    pts_s: float
    pts_s_abs: float
    image: np.ndarray


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the reader knows about the stream before decoding (declared, not verified)."""

    width: int
    height: int
    fps: float
    #: frame count the container declares (0 if it does not, e.g. Matroska).
    declared_frames: int
    #: declared count, else duration x fps (approximate for variable frame rate); 0 if unknown.
    expected_frames: int
    #: container time (s) at which the stream should end, if known; catches undeclared truncation.
    end_s_abs: float | None
    time_base: Fraction
    start_pts: int | None
    codec: str


class FrameReader:
    """Iterate decoded frames; remembers how far decoding got and why it stopped.

    Use it (rather than :func:`iter_frames`) when a broken file should yield its decodable part:
    with ``on_error="stop"`` iteration simply ends at the first demux/decode error (or early end of
    data) and ``error`` says what happened, while ``decoded_frames`` tells how far it got. Errors
    while *opening* always raise :class:`VideoRejected`.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        max_side: int | None = None,
        size: tuple[int, int] | None = None,
        gray: bool = False,
        start_frame: int = 0,
        end_frame: int | None = None,
        step: int = 1,
        threads: bool = True,
        fast: bool = False,
        on_error: OnError = "raise",
    ) -> None:
        if max_side is not None and size is not None:
            raise ValueError("give max_side or size, not both")
        if max_side is not None and max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (width, height) with both >= 1, got {size!r}")
        if start_frame < 0 or step < 1 or (end_frame is not None and end_frame < 0):
            raise ValueError("need start_frame >= 0, end_frame >= 0 and step >= 1")
        if on_error not in ("raise", "stop"):
            raise ValueError(f"on_error must be 'raise' or 'stop', got {on_error!r}")
        self.path = os.fspath(path)
        self.start_frame, self.end_frame, self.step = start_frame, end_frame, step
        self.gray, self.threads, self.fast, self.on_error = gray, threads, fast, on_error
        #: frames decoded so far, i.e. the index the next decoded frame would get.
        self.decoded_frames = 0
        #: why decoding stopped early (None while fine or after a clean end).
        self.error: str | None = None
        self._last_pts: int | None = None
        #: True when decoding started at a keyframe near start_frame instead of frame 0.
        self.seeked = False
        self._container = _open(self.path)
        try:
            self._stream = _video_stream(self._container)
            self.info = _stream_info(self._container, self._stream)
        except BaseException:
            self._container.close()
            raise
        self.out_size = _output_size(self.info.width, self.info.height, max_side, size)

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        """Single pass: the file is closed when iteration ends."""
        try:
            yield from self._frames()
        finally:
            self.close()

    def _frames(self) -> Iterator[Frame]:
        end = self.end_frame
        if end is not None and end <= self.start_frame:
            return
        self._configure()
        seek = self._seek_if_useful() if self.start_frame >= SEEK_MIN_FRAMES else None
        try:
            if seek is not None:
                try:
                    self.seeked = True
                    yield from self._decode(*seek)
                    return
                except _SeekMiss:  # nothing yielded yet: start over from the first frame
                    self.seeked = False
                    self._container.close()
                    self._container = _open(self.path)
                    self._stream = _video_stream(self._container)
                    self._configure()
            yield from self._decode(None, None)
        except av.FFmpegError as exc:
            self._fail(f"decoding stopped after {self.decoded_frames} frames: {_why(exc)}")
            return
        if end is None or end > self.decoded_frames:
            shortfall = self._shortfall()
            if shortfall:
                self._fail(f"the stream ended early ({shortfall}); the file is cut short or damaged")

    def _shortfall(self) -> str | None:
        """Why the decoded frames fall short of what the container declares, if they do."""
        info, n = self.info, self.decoded_frames
        if info.declared_frames:
            if info.declared_frames - n > max(_MISSING_TOLERANCE, info.declared_frames // 100):
                return f"{n} of {info.declared_frames} declared frames decoded"
            return None
        if info.end_s_abs is None:
            return None
        reached = (float(self._last_pts * info.time_base) if self._last_pts is not None else 0.0) + 1 / info.fps
        # No declared count (e.g. Matroska): compare time, which variable frame rate cannot skew.
        if info.end_s_abs - reached > max(0.5, _MISSING_TOLERANCE / info.fps, info.end_s_abs / 100):
            return f"decoded up to {reached:.2f} s of {info.end_s_abs:.2f} s"
        return None

    def _configure(self) -> None:
        stream = self._stream
        ctx = stream.codec_context
        if self.threads:
            stream.thread_type = "AUTO"
        else:
            ctx.thread_count = 1
        if self.fast:
            # Deblocking skipped only on frames nothing references: saves decode time on B-frame
            # streams without error drift (skipping it on reference frames would accumulate).
            ctx.options = {**(ctx.options or {}), "skip_loop_filter": "noref"}
        _discard_other_streams(self._container, stream)

    def _decode(self, index_of: dict[int, int] | None, first_pts: int | None) -> Iterator[Frame]:
        """Decode from the current position; ``index_of`` maps pts to index after a seek."""
        info, end = self.info, self.end_frame
        fmt = "gray" if self.gray else "rgb24"
        w, h = self.out_size
        reformatter = VideoReformatter()
        tb_num, tb_den = info.time_base.numerator, info.time_base.denominator
        origin = info.start_pts if info.start_pts is not None else first_pts
        index = -1
        for frame in self._container.decode(self._stream):
            if index_of is not None and frame.pts is not None and frame.pts in index_of:
                index = index_of[frame.pts]
            elif index_of is not None and index < 0:
                raise _SeekMiss  # cannot place the first frame after the seek
            else:
                index += 1
            if index_of is not None and index > self.start_frame and self.decoded_frames == 0:
                raise _SeekMiss  # seek overshot the target
            self.decoded_frames = index + 1
            self._last_pts = frame.pts if frame.pts is not None else self._last_pts
            if end is not None and index >= end:
                break
            if index < self.start_frame or (index - self.start_frame) % self.step:
                continue
            if origin is None:
                origin = frame.pts if frame.pts is not None else 0
            # int / int is correctly rounded in Python, so 0.9 s stays 0.9 (and no Fraction cost).
            if frame.pts is None:  # rare (raw streams): assume constant rate
                pts_s = index / info.fps
                pts_abs = origin * tb_num / tb_den + pts_s
            else:
                pts_s = (frame.pts - origin) * tb_num / tb_den
                pts_abs = frame.pts * tb_num / tb_den
            image = reformatter.reformat(frame, w, h, fmt, interpolation="AREA", threads=1).to_ndarray()
            yield Frame(index, pts_s, pts_abs, image)

    def _fail(self, message: str) -> None:
        self.error = message
        if self.on_error == "raise":
            raise VideoRejected("truncated", message[:1].upper() + message[1:] + ".")

    def _seek_if_useful(self) -> tuple[dict[int, int], int] | None:
        """Seek to the keyframe before ``start_frame`` when one exists after frame 0.

        Returns the pts -> index map for the frames the decoder will emit and the first frame's
        pts, or None when decoding from the start is needed anyway (no helpful keyframe, or
        timestamps missing/duplicated).
        """
        scan = _prescan(self.path, self._stream.index, self.start_frame + 1 + _REORDER_MARGIN)
        if scan is None:
            return None
        pts_sorted, key_pts = scan
        if self.start_frame >= len(pts_sorted):
            return None  # fewer packets than that: let the sequential path report the end
        target = pts_sorted[self.start_frame]
        k = bisect.bisect_right(key_pts, target) - 1
        if k < 0 or key_pts[k] <= pts_sorted[0]:
            return None
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        return {p: i for i, p in enumerate(pts_sorted)}, pts_sorted[0]


class _SeekMiss(Exception):
    pass


def iter_frames(
    path: PathLike,
    *,
    max_side: int | None = None,
    size: tuple[int, int] | None = None,
    gray: bool = False,
    start_frame: int = 0,
    end_frame: int | None = None,
    step: int = 1,
    threads: bool = True,
    fast: bool = False,
) -> Iterator[Frame]:
    """Yield frames ``start_frame <= index < end_frame`` every ``step``, downscaled by FFmpeg.

    ``max_side`` bounds the longest side (aspect kept, never upscales); ``size`` is an exact
    ``(width, height)``. ``fast`` skips deblocking on non-reference frames (slightly softer
    B-frames, no drift). Raises :class:`VideoRejected` when the file cannot be opened or breaks
    mid-stream (after yielding the frames before the break); use :class:`FrameReader` with
    ``on_error="stop"`` to keep the decodable part instead.
    """
    yield from FrameReader(
        path,
        max_side=max_side,
        size=size,
        gray=gray,
        start_frame=start_frame,
        end_frame=end_frame,
        step=step,
        threads=threads,
        fast=fast,
    )


def read_frames(path: PathLike, **kwargs: Any) -> tuple[np.ndarray, list[float]]:
    """All selected frames as one ``[T, H, W, C]`` uint8 array (C=1 for gray) plus their ``pts_s``.

    Takes the keyword arguments of :func:`iter_frames`; meant for short clips that fit in memory.
    """
    images: list[np.ndarray] = []
    pts: list[float] = []
    for frame in iter_frames(path, **kwargs):
        images.append(frame.image)
        pts.append(frame.pts_s)
    channels = 1 if kwargs.get("gray") else 3
    if not images:
        return np.zeros((0, 0, 0, channels), np.uint8), pts
    batch = np.stack(images)
    return (batch[..., None] if batch.ndim == 3 else batch), pts


def video_fps_and_count(path: PathLike) -> tuple[float, int]:
    """Frame rate and frame count without decoding: the declared count, else a packet count."""
    container = _open(os.fspath(path))
    with container:
        stream = _video_stream(container)
        fps = _fps(stream)
        if stream.frames:
            return fps, int(stream.frames)
        _discard_other_streams(container, stream)
        try:
            count = sum(1 for p in container.demux(stream) if p.size)
        except av.FFmpegError as exc:
            raise VideoRejected("truncated", f"Reading packets failed ({_why(exc)}).") from exc
        return fps, count


# -- helpers ---------------------------------------------------------------------------------------


def _open(path: str) -> av.container.InputContainer:
    if not os.path.isfile(path):
        raise VideoRejected("unreadable", f"The path {path} does not exist or is not a regular file.")
    if os.path.getsize(path) == 0:
        raise VideoRejected("empty_file", "The file is empty (0 bytes).")
    try:
        return open_input(path)
    except (av.FFmpegError, ValueError, UnicodeError) as exc:
        if _looks_like_media(path):
            raise VideoRejected(
                "truncated", f"The file looks like a video but FFmpeg cannot parse it ({_why(exc)}); "
                "it is probably cut short or damaged."
            ) from exc
        raise VideoRejected("not_a_video", f"FFmpeg cannot open the file as media ({_why(exc)}).") from exc
    except OSError as exc:
        raise VideoRejected("unreadable", f"The file cannot be read ({exc}).") from exc


def _looks_like_media(path: str) -> bool:
    """Magic bytes of common containers: tells 'damaged video' from 'not a video at all'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
        or head.startswith((b"\x1a\x45\xdf\xa3", b"OggS", b"FLV"))
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
    )


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """First real video stream (cover-art pictures skipped) with usable dimensions."""
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise VideoRejected("no_video_stream", "The file has no video stream.")
    stream = streams[0]
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:  # none declared, or refused from the header (decoder_options)
        raise VideoRejected("bad_dimensions", f"The video size is unknown ({ctx.width}x{ctx.height}) or over the "
                                              f"{DEFAULT_LIMITS.max_width}x{DEFAULT_LIMITS.max_height} bound.")
    return stream


def _fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return float(rate)
    raise VideoRejected("bad_fps", "The frame rate is unknown or zero.")


def _stream_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> StreamInfo:
    fps = _fps(stream)
    tb = stream.time_base or Fraction(1, 1)
    declared = max(0, int(stream.frames or 0))
    end_s_abs = duration_s = None
    if stream.duration:
        duration_s = float(stream.duration * tb)
        end_s_abs = float((stream.start_time or 0) * tb) + duration_s
    elif container.duration:
        duration_s = container.duration / av.time_base
        end_s_abs = (container.start_time or 0) / av.time_base + duration_s
    return StreamInfo(
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        fps=fps,
        declared_frames=declared,
        expected_frames=declared or (round(duration_s * fps) if duration_s else 0),
        end_s_abs=end_s_abs,
        time_base=tb,
        start_pts=stream.start_time,
        codec=stream.codec_context.name,
    )


def _output_size(width: int, height: int, max_side: int | None, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        return int(size[0]), int(size[1])
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _discard_other_streams(container: av.container.InputContainer, stream: av.stream.Stream) -> None:
    discard_all = getattr(getattr(av.stream, "Discard", None), "all", None)  # PyAV >= 18
    if discard_all is not None:
        for other in container.streams:
            if other.index != stream.index:
                other.discard = discard_all


def _prescan(path: str, stream_index: int, max_packets: int) -> tuple[list[int], list[int]] | None:
    """Sorted pts of the first ``max_packets`` video packets and the keyframe pts among them."""
    try:
        with open_input(path) as container:
            stream = container.streams[stream_index]
            _discard_other_streams(container, stream)
            pts: list[int] = []
            keys: list[int] = []
            for packet in container.demux(stream):
                if not packet.size or packet.is_discard:  # discard: dropped by the decoder too
                    continue
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
                if len(pts) >= max_packets:
                    break
    except av.FFmpegError:
        return None
    pts.sort()
    if len(set(pts)) != len(pts):
        return None
    # Only the first max_packets - margin positions are certain; later ones may still be reordered.
    certain = max(0, len(pts) - _REORDER_MARGIN) if len(pts) >= max_packets else len(pts)
    return pts[: max(certain, 1)], sorted(keys)


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc.__class__.__name__)


__all__ = [
    "Frame",
    "FrameReader",
    "StreamInfo",
    "iter_frames",
    "read_frames",
    "video_fps_and_count",
    "SEEK_MIN_FRAMES",
]
