"""filter: quality scores for every clip and the thresholds they fail (worldloom.video.filters)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

from worldloom.video import filters
from worldloom.video.pipeline import Resources, Stage, VideoTask


@dataclass
class FilterStage(Stage):
    """Scores are kept on every clip, rejected or not, so thresholds can be tuned afterwards."""

    name: ClassVar[str] = "filter"
    inputs = ("clips", "clip.frames", "clip.frame_fps")
    outputs = ("clip.scores", "clip.rejections")
    resources = Resources(cpus=0.5, memory_mb=256)

    config: filters.FilterConfig = field(default_factory=filters.FilterConfig)

    def process(self, task: VideoTask) -> None:
        for clip in task.clips:
            scores = filters.clip_scores(clip.frames, clip.frame_fps, clip.span.end_s - clip.span.start_s)
            clip.scores = {k: float(v) for k, v in asdict(scores).items()}
            clip.rejections.extend(filters.evaluate(scores, self.config))
