"""dedup stage: the sharper of two duplicates stays; near duplicates in the index count too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldloom.testkit.media import clip_task
from worldloom.video import synthetic
from worldloom.video.pipeline import VideoTask
from worldloom.video.stages import DedupStage, VisualEmbedStage


def _task(tmp_path: Path) -> VideoTask:
    task = VideoTask("vid", tmp_path / "v.mp4", tmp_path, {})
    frames = synthetic.pan_frames(0)
    task.clips = [clip_task("soft", frames, scores={"sharpness": 50.0}),
                  clip_task("sharp", frames, 8.0, 100, scores={"sharpness": 90.0}),
                  clip_task("other", synthetic.pan_frames(5), 8.0, 200, scores={"sharpness": 10.0})]
    VisualEmbedStage().process(task)
    return task


def test_the_sharper_duplicate_stays(tmp_path: Path) -> None:
    task = _task(tmp_path)
    DedupStage().process(task)
    task.drop_rejected()
    assert [c.clip_id for c in task.clips] == ["sharp", "other"]
    soft = task.filtered_clips[0]
    assert soft.duplicate_of == "sharp" and [r.filter for r in soft.rejections] == ["duplicate_exact"]
    assert soft.rejections[0].value == 0.0 and soft.rejections[0].threshold == 6.0
    assert "exact duplicate of clip sharp" in soft.rejections[0].reason


def test_neighbours_in_the_index_are_duplicates_too(tmp_path: Path) -> None:
    task = _task(tmp_path)
    calls = []

    def neighbours(vector: np.ndarray, exclude_video: str, k: int) -> list[tuple[str, float, list[int]]]:
        calls.append((exclude_video, k))
        return [("indexed", 0.99, [])]  # close in embedding, no hash stored

    DedupStage(max_phash_distance=0, semantic_threshold=0.98, neighbours=neighbours).process(task)
    assert calls and calls[0] == ("vid", 5)
    assert all(c.duplicate_of == "indexed" and c.rejections[0].filter == "duplicate_semantic" for c in task.clips)
