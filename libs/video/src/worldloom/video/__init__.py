"""Video validation and helpers built on PyAV.

``probe(path)`` returns a :class:`VideoInfo` or raises :class:`VideoRejected` (``.code``, ``.reason``)
according to :class:`VideoLimits`. Test media writers live in :mod:`worldloom.video.synthetic`.
"""

from worldloom.video.errors import REJECTION_CODES, VideoRejected
from worldloom.video.limits import DEFAULT_LIMITS, VideoLimits
from worldloom.video.probe import VideoInfo, probe

__all__ = ["DEFAULT_LIMITS", "REJECTION_CODES", "VideoInfo", "VideoLimits", "VideoRejected", "probe"]
