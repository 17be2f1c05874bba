"""The small, upright, evenly sampled frames every analysis stage works on.

Curation (filters, descriptors, embeddings, hashes) and search (query images and clips) must see
frames prepared the same way, or a frame of a clip would not find that clip: this is that one way.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from worldloom.video.decode import FrameReader
from worldloom.video.errors import VideoRejected
from worldloom.video.probe import probe

ANALYSIS_MAX_SIDE = 128
ANALYSIS_FPS = 8.0  # motion and shake scores are calibrated at >= 8 fps
MAX_ANALYSIS_FRAMES = 64


@dataclass
class AnalysisFrames:
    frames: np.ndarray        # [T, H, W, 3] uint8, upright
    fps: float                # effective sampling rate of `frames`
    indices: list[int]        # source frame index of each sampled frame
    error: str | None = None  # decoding stopped early (the frames before the break are kept)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Applies clockwise display rotation (probe's convention) to the pixels."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=-k)) if k else image


def analysis_frames(
    path: str | os.PathLike[str],
    start_frame: int = 0,
    end_frame: int | None = None,
    *,
    source_fps: float | None = None,
    rotation: int | None = None,
    target_fps: float = ANALYSIS_FPS,
    max_frames: int = MAX_ANALYSIS_FRAMES,
    max_side: int = ANALYSIS_MAX_SIDE,
) -> AnalysisFrames:
    """Samples [start_frame, end_frame) at about `target_fps`, at most `max_frames`, longest side `max_side`."""
    if source_fps is None or rotation is None or end_frame is None:
        info = probe(path)
        source_fps = source_fps or info.fps or target_fps
        rotation = info.rotation if rotation is None else rotation
        end_frame = info.frame_count if end_frame is None else end_frame
    n = max(0, end_frame - start_frame)
    step = max(1, round(source_fps / target_fps))
    if n and math.ceil(n / step) > max_frames:
        step = math.ceil(n / max_frames)
    reader = FrameReader(path, max_side=max_side, start_frame=start_frame, end_frame=end_frame, step=step,
                         on_error="stop")
    images, indices = [], []
    with reader:
        for frame in reader:
            images.append(upright(frame.image, rotation))
            indices.append(frame.index)
            if len(images) >= max_frames:
                break
    if not images:
        raise VideoRejected("truncated", f"no frame decoded in [{start_frame}, {end_frame}) ({reader.error or 'empty'})")
    return AnalysisFrames(np.stack(images), source_fps / step, indices, reader.error)
