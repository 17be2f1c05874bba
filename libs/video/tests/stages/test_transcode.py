"""transcode stage: renditions, pictures and analysis frames per clip; a clip that cannot be cut is rejected."""

from __future__ import annotations

from pathlib import Path

from worldloom.testkit.media import clip_task
from worldloom.video import synthetic
from worldloom.video.pipeline import VideoTask
from worldloom.video.probe import probe
from worldloom.video.stages import TranscodeStage


def _task(tmp_path: Path, src: Path, spans: list[tuple[int, int]]) -> VideoTask:
    task = VideoTask("vid", src, tmp_path / "work", {})
    task.workdir.mkdir(exist_ok=True)
    task.clips = [clip_task(f"c{a}", synthetic.pan_frames(frames=b - a), 24.0, a) for a, b in spans]
    for c in task.clips:
        c.frames = None  # as the split stage leaves a clip: a span, no frames yet
    return task


def test_renditions_pictures_and_frames_per_clip(tmp_path: Path) -> None:
    src = synthetic.write_video(tmp_path / "v.mp4", 160, 120, 48, 24)
    task = _task(tmp_path, src, [(0, 24), (24, 48), (100, 124)])
    TranscodeStage(train_size=32, preview_short_side=64).process(task)
    good, late = task.clips[:2], task.clips[2]
    for clip in good:
        assert clip.accepted and set(clip.renditions) == {"preview.mp4", "train.mp4", "thumb.jpg", "preview.gif"}
        train = probe(clip.renditions["train.mp4"])
        assert (train.width, train.height) == (32, 32) and train.frame_count == 24
        assert clip.rendition_info["train.mp4"]["width"] == 32 and clip.rendition_info["preview.mp4"]["height"] == 64
        assert clip.frames is not None and clip.frames.shape[-1] == 3 and clip.frame_fps > 0
    assert [r.filter for r in late.rejections] == ["unreadable"] and not late.renditions  # past the end


def test_an_unreadable_source_rejects_every_clip(tmp_path: Path) -> None:
    task = _task(tmp_path, synthetic.write_random_bytes(tmp_path / "x.mp4"), [(0, 24), (24, 48)])
    TranscodeStage().process(task)
    assert all([r.filter for r in c.rejections] == ["unreadable"] and "decoded" in c.rejections[0].reason
               for c in task.clips)
