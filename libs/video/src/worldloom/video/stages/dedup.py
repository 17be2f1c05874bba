"""dedup: drops exact (perceptual hash) and near (embedding cosine) duplicates, keeping the sharper clip."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from worldloom.video import phash
from worldloom.video.pipeline import ClipTask, Resources, Stage, VideoTask

Neighbours = Callable[[np.ndarray, str, int], list[tuple[str, float, list[int]]]]
"""(vector, exclude_video_id, k) -> [(clip_id, cosine, phash)] from clips already in the index."""


@dataclass
class DedupStage(Stage):
    """Clips of this video are compared with each other, sharpest first, and (with ``neighbours``) with
    clips of other videos already indexed; a duplicate names the clip it duplicates."""

    name: ClassVar[str] = "dedup"
    inputs = ("clips", "clip.visual_embedding", "clip.phash", "clip.scores")
    outputs = ("clip.duplicate_of", "clip.rejections")
    resources = Resources(cpus=0.25, memory_mb=128)

    max_phash_distance: float = 6.0  # mean Hamming distance of the frames' 64-bit hashes
    semantic_threshold: float = 0.985  # cosine of the clip embeddings
    neighbours: Neighbours | None = None

    def process(self, task: VideoTask) -> None:
        candidates = sorted(task.clips, key=lambda c: (-c.scores.get("sharpness", 0.0), c.span.start_frame))
        kept: list[ClipTask] = []
        for clip in candidates:
            dup = self._match_kept(clip, kept) or self._match_index(clip, task.video_id)
            if dup is None:
                kept.append(clip)
                continue
            other, kind, value, threshold = dup
            clip.duplicate_of = other
            clip.reject(kind, f"{'exact' if kind == 'duplicate_exact' else 'near'} duplicate of clip {other} "
                              f"({'phash distance' if kind == 'duplicate_exact' else 'cosine'} {value:.3f})",
                        value, threshold)

    def _match_kept(self, clip: ClipTask, kept: list[ClipTask]) -> tuple[str, str, float, float] | None:
        for other in kept:
            d = phash.clip_distance(clip.phash, other.phash)
            if d <= self.max_phash_distance:
                return other.clip_id, "duplicate_exact", d, self.max_phash_distance
            cos = float(np.dot(clip.visual_embedding, other.visual_embedding))
            if cos >= self.semantic_threshold:
                return other.clip_id, "duplicate_semantic", cos, self.semantic_threshold
        return None

    def _match_index(self, clip: ClipTask, video_id: str) -> tuple[str, str, float, float] | None:
        if self.neighbours is None:
            return None
        for other_id, cos, other_hash in self.neighbours(clip.visual_embedding, video_id, 5):
            if other_hash and phash.clip_distance(clip.phash, other_hash) <= self.max_phash_distance:
                return other_id, "duplicate_exact", phash.clip_distance(clip.phash, other_hash), self.max_phash_distance
            if cos >= self.semantic_threshold:
                return other_id, "duplicate_semantic", cos, self.semantic_threshold
        return None
