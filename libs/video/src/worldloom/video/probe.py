"""Probe a video file: facts about it, or a :class:`VideoRejected` saying why it is unusable.

One pass over the file: open the container, check the cheap declared facts against the
limits, then demux every video packet (exact frame count, catches truncation) while decoding
only until the first frame appears (proves the stream really decodes).
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.logging

from worldloom.video.errors import VideoRejected
from worldloom.video.limits import DEFAULT_LIMITS, VideoLimits, open_input

Source = str | os.PathLike[str] | BinaryIO

# FFmpeg logs to stderr from C for every odd packet; probe turns those problems into
# VideoRejected, so the noise only hides the useful message. (PyAV 18 already defaults to None.)
av.logging.set_level(None)

_HEAD_BYTES = 512


@dataclass(frozen=True)
class VideoInfo:
    """What probe learned about an accepted video.

    ``rotation`` is the clockwise rotation in degrees (0/90/180/270) a player applies for display,
    the same convention as the legacy ``rotate`` tag; ``width``/``height`` are the stored (coded
    picture) size before that rotation.
    """

    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    rotation: int
    has_audio: bool
    audio_codec: str | None
    pix_fmt: str | None
    bit_rate: int | None
    start_time_s: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def still_image(self) -> bool:
        """One picture, not a video: an image format (FFmpeg's image demuxers: png_pipe, jpeg_pipe,
        image2...) or a single frame. Callers decide: ingest refuses it, search takes it as a query."""
        name = self.container.split(",")[0]
        return name == "image2" or name.endswith("_pipe") or self.frame_count <= 1


def probe(path: Source, limits: VideoLimits = DEFAULT_LIMITS) -> VideoInfo:
    """Validate ``path`` (a path, or a seekable binary file object read from offset 0) and describe it.

    Raises :class:`VideoRejected` for every problem with the file itself; never lets a PyAV
    exception escape. A non-seekable file object is a caller bug and raises ``ValueError``.
    """
    size, head = _size_and_head(path)
    if size == 0:
        raise VideoRejected("empty_file", "The file is empty (0 bytes).")
    if size > limits.max_bytes:
        raise VideoRejected(
            "too_large", f"The file is {size} bytes, over the limit max_bytes={limits.max_bytes}."
        )
    kind = _sniff_container(head)
    source: Any = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(source, str):
        source.seek(0)
    try:
        container = open_input(source, limits)
    except (av.FFmpegError, OSError, ValueError, UnicodeError) as exc:
        if kind:
            raise VideoRejected(
                "truncated",
                f"The file starts like {kind} but FFmpeg cannot parse it ({_why(exc)}); it is probably "
                "cut short (e.g. an MP4 whose index is missing) or damaged.",
            ) from exc
        raise VideoRejected(
            "not_a_video", f"FFmpeg does not recognise the file as a media container ({_why(exc)})."
        ) from exc
    try:
        with container:
            return _inspect(container, size, kind, limits)
    except av.FFmpegError as exc:  # anything not handled closer to its cause
        raise VideoRejected("truncated", f"FFmpeg failed while reading the file ({_why(exc)}).") from exc
    finally:
        if not isinstance(source, str):
            source.seek(0)


def _why(exc: BaseException) -> str:
    """FFmpeg's reason without the file name: temp paths are server internals, not for API callers."""
    return str(getattr(exc, "strerror", None) or exc.__class__.__name__)


def _size_and_head(path: Source) -> tuple[int, bytes]:
    """Size and first bytes without FFmpeg, so empty/oversized files are refused before opening."""
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        try:
            if not p.is_file():
                raise VideoRejected("unreadable", f"The path {p} does not exist or is not a regular file.")
            size = p.stat().st_size
            with p.open("rb") as fh:
                return size, fh.read(_HEAD_BYTES)
        except OSError as exc:
            raise VideoRejected("unreadable", f"The file {p} cannot be read ({exc}).") from exc
    if not (hasattr(path, "seekable") and path.seekable()):
        raise ValueError("probe() needs a path or a seekable binary file object")
    size = path.seek(0, io.SEEK_END)
    path.seek(0)
    head = path.read(_HEAD_BYTES)
    path.seek(0)
    return size, bytes(head)


def _sniff_container(head: bytes) -> str | None:
    """Name the container family from magic bytes; separates 'damaged video' from 'not a video'."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "an MP4/MOV file"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "a Matroska/WebM file"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "an AVI file"
    if head.startswith(b"OggS"):
        return "an Ogg file"
    if head.startswith(b"FLV"):
        return "an FLV file"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "an ASF/WMV file"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "an MPEG program stream"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "an MPEG transport stream"
    return None


def _pick_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """First real video stream; skips cover-art 'video' streams (attached pictures)."""
    streams = list(container.streams.video)
    for s in streams:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    return streams[0] if streams else None


def _inspect(
    container: av.container.InputContainer, size: int, kind: str | None, limits: VideoLimits
) -> VideoInfo:
    stream = _pick_video_stream(container)
    audio = list(container.streams.audio)
    if stream is None:
        if not audio and not kind:
            raise VideoRejected(
                "not_a_video",
                f"FFmpeg opened the file as '{container.format.name}' but it has no audio or video "
                "streams; it is not a media file.",
            )
        found = ", ".join(f"{s.type} ({s.codec_context.name})" for s in container.streams) or "none"
        raise VideoRejected("no_video_stream", f"The file has no video stream (streams found: {found}).")

    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    _check_dimensions(width, height, limits)

    fps = _declared_fps(stream)
    if fps is not None and fps > limits.max_fps:
        raise VideoRejected("bad_fps", f"The frame rate is {fps:.3f} fps, over max_fps={limits.max_fps}.")
    duration = _declared_duration(container, stream)
    if duration is not None:
        _check_duration(duration, limits)
    if stream.frames and stream.frames > limits.max_frames:
        raise VideoRejected(
            "too_long", f"The container declares {stream.frames} frames, over max_frames={limits.max_frames}."
        )

    scan = _scan_packets(container, stream, limits)
    tb = stream.time_base or Fraction(1, 1)
    if scan.first_frame is None:
        raise VideoRejected(
            "truncated",
            f"None of the {scan.count} video packets decoded to a frame"
            + (f" (last decoder error: {scan.decode_error})" if scan.decode_error else "")
            + "; the stream is damaged or cut short.",
        )
    if duration is None and scan.first_pts is not None and scan.end_pts is not None:
        duration = float((scan.end_pts - scan.first_pts) * tb)
        _check_duration(duration, limits)
    if fps is None and duration:
        fps = scan.count / duration
    if not fps or fps <= 0:
        raise VideoRejected("bad_fps", "The frame rate is unknown or zero.")
    if fps > limits.max_fps:
        raise VideoRejected("bad_fps", f"The frame rate is {fps:.3f} fps, over max_fps={limits.max_fps}.")

    start_pts = stream.start_time if stream.start_time is not None else scan.first_pts
    if start_pts is None:
        start_pts = scan.first_frame.pts or 0
    frame = scan.first_frame
    return VideoInfo(
        container=container.format.name,
        codec=ctx.name,
        width=width,
        height=height,
        fps=float(fps),
        duration_s=float(duration) if duration is not None else scan.count / fps,
        frame_count=scan.count,
        rotation=_rotation(stream, frame),
        has_audio=bool(audio),
        audio_codec=audio[0].codec_context.name if audio else None,
        pix_fmt=ctx.pix_fmt or frame.format.name,
        bit_rate=int(container.bit_rate or stream.bit_rate or 0) or None,
        start_time_s=float(start_pts * tb),
        size_bytes=size,
    )


def _check_dimensions(width: int, height: int, limits: VideoLimits) -> None:
    if width <= 0 or height <= 0:
        raise VideoRejected(
            "bad_dimensions",
            f"The video size is unknown ({width}x{height}): the stream declares none, or its pictures are "
            f"larger than max_width x max_height = {limits.max_width}x{limits.max_height}, which the decoder "
            "refuses before decoding them.",
        )
    short, long_ = sorted((width, height))
    max_long = max(limits.max_width, limits.max_height)
    max_short = min(limits.max_width, limits.max_height)
    if short < limits.min_side:
        raise VideoRejected(
            "bad_dimensions", f"The video is {width}x{height}; its short side is below min_side={limits.min_side} px."
        )
    if long_ > max_long or short > max_short:
        raise VideoRejected(
            "bad_dimensions",
            f"The video is {width}x{height}, larger than max_width x max_height = "
            f"{limits.max_width}x{limits.max_height} (either orientation).",
        )
    if long_ / short > limits.max_aspect_ratio:
        raise VideoRejected(
            "bad_dimensions",
            f"The video is {width}x{height}, aspect ratio {long_ / short:.1f}:1 exceeds "
            f"max_aspect_ratio={limits.max_aspect_ratio}.",
        )


def _check_duration(duration: float, limits: VideoLimits) -> None:
    if duration > limits.max_duration_s:
        raise VideoRejected(
            "too_long", f"The video lasts {duration:.2f} s, over max_duration_s={limits.max_duration_s}."
        )


def _declared_fps(stream: av.video.stream.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return None


def _declared_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


@dataclass
class _Scan:
    count: int = 0
    first_pts: int | None = None
    end_pts: int | None = None
    first_frame: av.VideoFrame | None = None
    decode_error: str | None = None


def _scan_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, limits: VideoLimits
) -> _Scan:
    """Count every video packet; decode only until the first frame comes out."""
    scan = _Scan()
    discard_all = getattr(getattr(av.stream, "Discard", None), "all", None)  # PyAV >= 18
    if discard_all is not None:
        for other in container.streams:
            if other.index != stream.index:
                other.discard = discard_all  # skip audio/subtitle packets inside FFmpeg
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # end-of-stream marker PyAV yields for flushing
                continue
            scan.count += 1
            if scan.count > limits.max_frames:
                raise VideoRejected(
                    "too_long", f"The video has more than max_frames={limits.max_frames} frames."
                )
            if packet.pts is not None:
                end = packet.pts + (packet.duration or 0)
                scan.first_pts = packet.pts if scan.first_pts is None else min(scan.first_pts, packet.pts)
                scan.end_pts = end if scan.end_pts is None else max(scan.end_pts, end)
            if scan.first_frame is None:
                _decode_first(stream, packet, scan)
    except av.FFmpegError as exc:
        raise VideoRejected(
            "truncated", f"Reading packets failed after {scan.count} video packets ({_why(exc)}); the file is damaged."
        ) from exc
    if scan.count == 0:
        raise VideoRejected("truncated", "The video stream contains no packets.")
    if scan.first_frame is None:
        _decode_first(stream, None, scan)  # flush: decoders with delay emit frames only now
    declared = stream.frames or 0
    if declared and declared - scan.count > max(2, declared // 100):
        raise VideoRejected(
            "truncated",
            f"The container declares {declared} frames but only {scan.count} could be read; "
            "the file is cut short.",
        )
    return scan


def _decode_first(stream: av.video.stream.VideoStream, packet: av.Packet | None, scan: _Scan) -> None:
    try:
        frames = stream.codec_context.decode(packet)
    except av.FFmpegError as exc:  # broken first packets may be followed by good ones
        scan.decode_error = str(exc)
        return
    if frames:
        scan.first_frame = frames[0]


def _rotation(stream: av.video.stream.VideoStream, frame: av.VideoFrame) -> int:
    """Clockwise display rotation: from the frame's display matrix, else the legacy ``rotate`` tag.

    PyAV 18 has no getter for stream-level side data (only setters), but the decoder copies the
    display matrix onto every frame, and ``VideoFrame.rotation`` reads it counter-clockwise.
    """
    ccw = getattr(frame, "rotation", 0) or 0
    if ccw:
        return int(round(-ccw)) % 360
    tag = stream.metadata.get("rotate")
    try:
        return int(round(float(tag))) % 360 if tag else 0
    except ValueError:
        return 0
