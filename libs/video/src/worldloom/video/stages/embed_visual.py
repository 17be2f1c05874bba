"""embed_visual: a clip embedding, keyframe embeddings and perceptual hashes (worldloom.video.visual_embed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from worldloom.video import phash, visual_embed
from worldloom.video.pipeline import Resources, Stage, VideoTask


@dataclass
class VisualEmbedStage(Stage):
    """The clip embedding (mean of frame embeddings) answers clip queries; keyframe embeddings answer
    image queries, so a frame finds its own clip even among clips cut from one continuous shot."""

    name: ClassVar[str] = "embed_visual"
    inputs = ("clips", "clip.frames")
    outputs = ("clip.visual_embedding", "clip.keyframe_embeddings", "clip.phash")
    resources = Resources(cpus=0.5, memory_mb=256)

    keyframes: int = 16  # at most this many evenly spaced keyframes per clip

    def process(self, task: VideoTask) -> None:
        for clip in task.clips:
            per_frame = visual_embed.embed_frames(clip.frames).astype(np.float32)
            mean = per_frame.mean(axis=0)
            clip.visual_embedding = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
            picks = np.unique(np.linspace(0, len(per_frame) - 1, min(self.keyframes, len(per_frame))).round().astype(int))
            clip.keyframe_embeddings = per_frame[picks]
            clip.phash = phash.clip_phash(clip.frames)
