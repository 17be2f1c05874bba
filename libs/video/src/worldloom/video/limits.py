"""Acceptance limits for incoming videos.

Limits exist so that one hostile or broken upload cannot exhaust disk, memory or decode time
downstream; they are checked by :func:`worldloom.video.probe.probe` before any expensive work.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

GIB = 1024**3


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


DEFAULT_LIMITS = VideoLimits()
