"""embed_visual stage: a unit clip embedding, at most `keyframes` keyframe embeddings, perceptual hashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldloom.testkit.media import clip_task
from worldloom.video import synthetic
from worldloom.video.pipeline import VideoTask
from worldloom.video.stages import VisualEmbedStage


def test_clip_and_keyframe_embeddings(tmp_path: Path) -> None:
    task = VideoTask("vid", tmp_path / "v.mp4", tmp_path, {})
    task.clips = [clip_task("a", synthetic.pan_frames(0)), clip_task("a2", synthetic.pan_frames(0)),
                  clip_task("b", synthetic.pan_frames(7)), clip_task("short", synthetic.pan_frames(1, frames=3))]
    VisualEmbedStage(keyframes=4).process(task)
    a, a2, b, short = task.clips
    for clip in task.clips:
        assert clip.visual_embedding.dtype == np.float32
        assert abs(float(np.linalg.norm(clip.visual_embedding)) - 1.0) < 1e-5
        assert clip.phash and all(isinstance(h, int) for h in clip.phash)
    assert a.keyframe_embeddings.shape[0] == 4 and short.keyframe_embeddings.shape[0] == 3
    assert np.array_equal(a.visual_embedding, a2.visual_embedding) and a.phash == a2.phash  # same frames, same vectors
    assert float(a.visual_embedding @ b.visual_embedding) < float(a.visual_embedding @ a2.visual_embedding)
