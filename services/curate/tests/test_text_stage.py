"""embed_text stage: one batch of caption embeddings per video, with the real MiniLM model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldloom.curate.text_stage import TextEmbedStage
from worldloom.models.text_embedder import DIM, shared_text_embedder
from worldloom.testkit.media import clip_task
from worldloom.video.pipeline import VideoTask


def test_captioned_clips_get_unit_text_embeddings(tmp_path: Path) -> None:
    made = []

    def factory():  # noqa: ANN202
        made.append(1)
        return shared_text_embedder()

    stage = TextEmbedStage(factory)
    stage.setup()
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    task = VideoTask("vid", tmp_path / "v.mp4", tmp_path, {})
    task.clips = [clip_task("pot", frames, caption="A robot arm picks up a pot."),
                  clip_task("pan", frames, 8.0, 10, caption="A robot gripper lifts a cooking pot."),
                  clip_task("snow", frames, 8.0, 20, caption="Snow falls on a mountain at night."),
                  clip_task("blank", frames, 8.0, 30)]
    stage.process(task)
    pot, pan, snow, blank = task.clips
    assert made == [1] and blank.text_embedding is None
    for clip in (pot, pan, snow):
        assert clip.text_embedding.shape == (DIM,) and abs(float(np.linalg.norm(clip.text_embedding)) - 1) < 1e-4
    assert float(pot.text_embedding @ pan.text_embedding) > float(pot.text_embedding @ snow.text_embedding) + 0.2
