"""Acceptance limits for incoming videos.

Limits exist so that one hostile or broken upload cannot exhaust disk, memory or decode time
downstream; they are checked by :func:`worldloom.video.probe.probe` before any expensive work, and
:func:`open_input` makes every decoder refuse a picture over the size bound before allocating it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, BinaryIO

import av

GIB = 1024**3
_ALIGN_MARGIN = 128


@dataclass(frozen=True)
class VideoLimits:
    """Bounds a video must satisfy to be accepted.

    Width/height limits are orientation-agnostic: the long side is compared with
    ``max(max_width, max_height)`` and the short side with ``min(...)``, so a portrait
    2160x3840 phone video passes the default 7680x4320 (8K UHD) bound.
    """

    max_bytes: int = 2 * GIB
    max_width: int = 7680
    max_height: int = 4320
    min_side: int = 16
    max_aspect_ratio: float = 8.0
    max_duration_s: float = 2 * 3600.0
    max_fps: float = 240.0
    #: default = max_fps * max_duration_s, i.e. only reachable by an implausible file.
    max_frames: int = 240 * 2 * 3600

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ValueError(f"VideoLimits.{f.name} must be > 0, got {value!r}")
        if self.max_aspect_ratio < 1:
            raise ValueError(f"VideoLimits.max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}")
        if self.min_side > min(self.max_width, self.max_height):
            raise ValueError("VideoLimits.min_side exceeds the maximum width/height")

    @property
    def max_pixels(self) -> int:
        """The largest picture the size bound admits (either orientation), with room for the alignment
        decoders add before they check (FFmpeg checks the width rounded up to its stride alignment, up to
        64, and some codecs count macroblock padding): a portrait 4320x7680 checks as 4352x7680."""
        return (self.max_width + _ALIGN_MARGIN) * (self.max_height + _ALIGN_MARGIN)


DEFAULT_LIMITS = VideoLimits()


def decoder_options(limits: VideoLimits = DEFAULT_LIMITS) -> dict[str, str]:
    """FFmpeg's ``max_pixels``: a decoder refuses a picture with more pixels from its header (PNG IHDR,
    H.264 SPS...) before allocating it; 7680x4320 16-bit RGBA is 265 MB, 16000x16000 would be 2 GB."""
    return {"max_pixels": str(limits.max_pixels)}


def open_input(source: str | os.PathLike[str] | BinaryIO, limits: VideoLimits = DEFAULT_LIMITS,
               **kwargs: Any) -> av.container.InputContainer:
    """``av.open`` for reading untrusted media with decode memory bounded: the decoders that
    ``avformat_find_stream_info`` runs inside ``av.open`` and the streams' own decoders get
    :func:`decoder_options` (an image claiming 16000x16000 is refused without decoding it; its size then
    reads 0x0). Not covered: MPEG program streams declare no streams before that step, so FFmpeg has no
    stream to apply the option to while it runs (the streams' own decoders afterwards are bounded)."""
    opts = decoder_options(limits)
    src = os.fspath(source) if isinstance(source, (str, os.PathLike)) else source
    container = av.open(src, mode="r", metadata_errors="ignore", options=opts, **kwargs)
    for stream in container.streams.video:
        stream.codec_context.options = {**(stream.codec_context.options or {}), **opts}
    return container
