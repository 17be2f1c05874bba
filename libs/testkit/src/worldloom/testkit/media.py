"""Media for the video and curation tests: the real clips they share and stage tasks made from frames.

The worldloom packages are imported when a helper is called, not here, so `import worldloom.testkit`
stays free of them (the testkit itself only starts servers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from worldloom.video.pipeline import ClipTask

#: a 10 s excerpt of the Sintel trailer under the shared data folder, and its shots (frame ranges):
#: a hard cut at 213 -> 214, a fade to black ending at 104 and a fade-in starting at 165
SINTEL = "video/sintel/sintel_clip_10s.mp4"
SINTEL_SHOTS = {"snow": (3, 104), "man": (165, 214), "girl": (214, 240)}
SINTEL_TITLE_CARD = (104, 165)  # small white text on black


def frames_of(path: Path, max_side: int = 128) -> np.ndarray:
    """Every frame of a video, upright RGB ``[T, H, W, 3]``, longest side at most ``max_side``."""
    from worldloom.video.decode import read_frames

    return read_frames(path, max_side=max_side)[0]


def clip_task(clip_id: str, frames: np.ndarray, fps: float = 8.0, start_frame: int = 0, **fields: Any) -> ClipTask:
    """A candidate clip as the transcode stage leaves it: analysis ``frames`` at ``fps``, its span in
    source frames from ``start_frame``; ``fields`` sets any other ClipTask field."""
    from worldloom.video.pipeline import ClipTask
    from worldloom.video.split import Span

    end = start_frame + len(frames)
    span = Span(start_frame, end, start_frame / fps, end / fps)
    return ClipTask(clip_id, span, frames=frames, frame_fps=fps, **fields)
