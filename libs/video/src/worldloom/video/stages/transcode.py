"""transcode: each clip's preview and square training renditions, thumbnail, GIF and analysis frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from worldloom.video import transcode
from worldloom.video.analysis import analysis_frames
from worldloom.video.errors import VideoRejected
from worldloom.video.pipeline import Resources, Stage, VideoTask


@dataclass
class TranscodeStage(Stage):
    """One decode per clip writes the preview and training renditions; analysis frames come from the
    small preview (already upright), which costs far less than decoding the source again."""

    name: ClassVar[str] = "transcode"
    inputs = ("path", "clips")
    outputs = ("clip.renditions", "clip.rendition_info", "clip.frames", "clip.frame_fps")
    resources = Resources(cpus=1.0, memory_mb=768)

    preview_short_side: int = 256
    train_size: int = 64  # square training rendition, pixels
    train_fps: float | None = None  # resample the training clip (None keeps the source fps)
    crf: int = 23

    def process(self, task: VideoTask) -> None:
        jobs = []
        for clip in task.clips:
            folder = task.workdir / clip.clip_id
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append(transcode.ClipJob(clip.span.start_frame, clip.span.end_frame, [
                transcode.RenditionSpec(folder / "preview.mp4", short_side=self.preview_short_side, crf=self.crf),
                transcode.RenditionSpec(folder / "train.mp4", square=self.train_size, fps=self.train_fps, crf=self.crf),
            ]))
        try:
            results = transcode.transcode_clips(task.path, jobs)
        except (OSError, ValueError) as exc:  # cannot even open the file any more
            results = [exc] * len(jobs)
        except Exception as exc:  # PyAV errors opening a damaged file
            results = [exc] * len(jobs)
        for clip, result in zip(task.clips, results, strict=True):
            if isinstance(result, Exception):
                clip.reject("unreadable", f"the clip could not be decoded/encoded: {result.__class__.__name__}: {result}")
                continue
            preview, train = result
            try:
                frames = analysis_frames(preview.path, 0, preview.frame_count, source_fps=preview.fps, rotation=0)
            except VideoRejected as exc:
                clip.reject("unreadable", f"the clip's preview could not be read back: {exc.reason}")
                continue
            folder = preview.path.parent
            clip.frames, clip.frame_fps = frames.frames, frames.fps
            mid = frames.frames[len(frames.frames) // 2]
            thumb = transcode.write_thumbnail(mid, folder / "thumb.jpg", max_side=256)
            gif_frames = frames.frames[:: max(1, len(frames.frames) // 12)][:12]
            gif = transcode.write_gif(gif_frames, folder / "preview.gif", fps=min(8.0, frames.fps), max_side=160)
            clip.renditions = {"preview.mp4": preview.path, "train.mp4": train.path, "thumb.jpg": thumb,
                               "preview.gif": gif}
            clip.rendition_info = {"preview.mp4": _info(preview), "train.mp4": _info(train)}


def _info(f: transcode.ClipFile) -> dict[str, float]:
    return {"width": f.width, "height": f.height, "fps": round(f.fps, 4), "frames": f.frame_count,
            "duration_s": round(f.duration_s, 4)}
