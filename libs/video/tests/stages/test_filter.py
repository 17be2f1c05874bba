"""filter stage: every clip gets its scores; the thresholds it fails become its rejections."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldloom.testkit.media import clip_task
from worldloom.video import synthetic
from worldloom.video.filters import FilterConfig
from worldloom.video.pipeline import VideoTask
from worldloom.video.stages import FilterStage


def test_scores_kept_and_failed_thresholds_reject(tmp_path: Path) -> None:
    pan = synthetic.pan_frames()
    still = np.repeat(pan[:1], len(pan), axis=0)
    task = VideoTask("vid", tmp_path / "v.mp4", tmp_path, {})
    task.clips = [clip_task("pan", pan), clip_task("still", still)]
    FilterStage(FilterConfig()).process(task)
    task.drop_rejected()
    assert [c.clip_id for c in task.clips] == ["pan"] and [c.clip_id for c in task.filtered_clips] == ["still"]
    rejected = task.filtered_clips[0]
    assert {r.filter for r in rejected.rejections} == {"min_motion", "max_frozen"}
    motion = next(r for r in rejected.rejections if r.filter == "min_motion")
    assert motion.value == rejected.scores["motion_mean"] and motion.threshold == 0.15 and "static" in motion.reason
    for clip in (task.clips[0], rejected):
        assert {"motion_mean", "sharpness", "brightness", "frozen_fraction"} <= set(clip.scores)

    lenient = VideoTask("vid", tmp_path / "v.mp4", tmp_path, {})
    lenient.clips = [clip_task("still", still)]
    FilterStage(FilterConfig(min_motion=None, max_frozen_fraction=None)).process(lenient)
    assert lenient.clips[0].accepted  # a threshold set to None is off
