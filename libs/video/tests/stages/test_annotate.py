"""annotate stage: caption parts from metadata, the VLM and descriptors; tags; a failing VLM is recorded."""

from __future__ import annotations

from pathlib import Path

from worldloom.testkit.media import clip_task
from worldloom.video import synthetic, transcode
from worldloom.video.pipeline import VideoTask
from worldloom.video.stages import AnnotateStage


def _task(tmp_path: Path) -> VideoTask:
    frames = synthetic.pan_frames()
    thumb = transcode.write_thumbnail(frames[0], tmp_path / "thumb.jpg")
    task = VideoTask("vid", tmp_path / "v.mp4", tmp_path, {}, {"dataset": "bridge", "instruction": " pick up the pot. "})
    task.clips = [clip_task("c", frames, renditions={"thumb.jpg": thumb})]
    return task


def test_metadata_vlm_and_descriptors_make_the_caption(tmp_path: Path) -> None:
    seen = []

    def vlm(jpeg: bytes, hint: str) -> str:
        seen.append((jpeg[:2], hint))
        return "A robot arm over a sink."

    task = _task(tmp_path)
    AnnotateStage(captioner=vlm).process(task)
    clip = task.clips[0]
    assert seen == [(b"\xff\xd8", "pick up the pot.")]
    assert clip.caption.startswith("pick up the pot. A robot arm over a sink. ") and clip.caption.endswith(".")
    assert clip.caption_source == "metadata+vlm+descriptors"
    assert "bridge" in clip.tags and clip.tags == sorted(set(clip.tags))
    assert clip.descriptors and all(not hasattr(v, "dtype") for v in clip.descriptors.values())  # plain JSON

    plain = _task(tmp_path)
    AnnotateStage(use_metadata=False).process(plain)
    assert plain.clips[0].caption_source == "descriptors" and "pot" not in plain.clips[0].caption


def test_a_failing_vlm_falls_back_and_says_why(tmp_path: Path) -> None:
    def broken(jpeg: bytes, hint: str) -> str:
        raise TimeoutError("model overloaded")

    task = _task(tmp_path)
    AnnotateStage(captioner=broken).process(task)
    clip = task.clips[0]
    assert clip.accepted and clip.caption_source == "metadata+descriptors"
    assert clip.descriptors["vlm_error"] == "TimeoutError: model overloaded"
