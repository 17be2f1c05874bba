"""split stage: candidate clips with deterministic ids; a damaged tail is recorded, not fatal."""

from __future__ import annotations

from pathlib import Path

from worldloom.video import synthetic
from worldloom.video.pipeline import VideoTask
from worldloom.video.split import SplitConfig
from worldloom.video.stages import SplitStage, clip_id_for


def test_stride_clips_get_ids_from_video_span_and_config(tmp_path: Path) -> None:
    src = synthetic.write_video(tmp_path / "v.mp4", 128, 96, 120, 24, faststart=True)
    config = SplitConfig(method="stride", stride_clip_s=1.0, stride_s=1.0)
    task = VideoTask("vid", src, tmp_path / "work", {})
    SplitStage(config, "cfg-a").process(task)
    assert [(s.start_frame, s.end_frame) for s in task.spans] == [(i, i + 24) for i in range(0, 120, 24)]
    assert [c.span for c in task.clips] == task.spans and task.errors == []
    assert [c.clip_id for c in task.clips] == [clip_id_for("vid", s.start_frame, s.end_frame, "cfg-a") for s in task.spans]
    again = VideoTask("vid", src, tmp_path / "work", {})
    SplitStage(config, "cfg-b").process(again)
    assert not {c.clip_id for c in again.clips} & {c.clip_id for c in task.clips}  # another config, other clips



def test_a_damaged_tail_keeps_the_decodable_clips_and_says_why(tmp_path: Path) -> None:
    src = synthetic.write_video(tmp_path / "v.mp4", 128, 96, 120, 24, faststart=True)
    cut = VideoTask("vid", synthetic.write_truncated(src, tmp_path / "cut.mp4", 0.5), tmp_path / "work", {})
    SplitStage(SplitConfig(min_clip_s=0.5, max_clip_s=1.0, trim_s=0.0), "cfg").process(cut)
    assert len(cut.errors) == 1 and cut.errors[0].startswith("decoding stopped after frame")
    assert cut.clips and all(c.span.end_frame < 120 for c in cut.clips)
