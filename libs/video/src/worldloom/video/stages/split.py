"""split: the video's candidate clips, by shot detection or fixed stride (worldloom.video.split)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from worldloom.video.pipeline import ClipTask, Resources, Stage, VideoTask
from worldloom.video.split import SplitConfig, split_video


def clip_id_for(video_id: str, start_frame: int, end_frame: int, config_hash: str) -> str:
    """Deterministic: the same video, span and config always give the same clip id (idempotency)."""
    return hashlib.sha256(f"{video_id}:{start_frame}:{end_frame}:{config_hash}".encode()).hexdigest()[:32]


@dataclass
class SplitStage(Stage):
    """A file that stops decoding part-way keeps the clips of its decodable part; the task records why."""

    name: ClassVar[str] = "split"
    inputs = ("path", "info")
    outputs = ("spans", "clips", "errors")
    resources = Resources(cpus=1.0, memory_mb=512)

    config: SplitConfig
    config_hash: str  # part of every clip id, so another config makes other clips

    def process(self, task: VideoTask) -> None:
        shots = split_video(task.path, self.config)
        if shots.error:
            task.errors.append(f"decoding stopped after frame {shots.decoded_frames}: {shots.error}")
        task.spans = list(shots)
        task.clips = [ClipTask(clip_id_for(task.video_id, s.start_frame, s.end_frame, self.config_hash), s)
                      for s in shots]
