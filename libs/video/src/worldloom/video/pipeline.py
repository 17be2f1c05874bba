"""A small stage/pipeline framework in the style of cosmos-curate and NeMo Curator.

Each stage declares the task fields it reads and writes and the resources it needs, so a pipeline can
be described (GET /v1/curation-runs/{id} shows it), validated before it runs (a stage reading a field
no earlier stage writes is a configuration error), and scaled stage by stage later (CPU vs GPU pools).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from worldloom.video.split import Span

log = logging.getLogger("worldloom.pipeline")


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 512


@dataclass
class ClipTask:
    """One candidate clip as it moves through the stages; rejected clips keep their reasons."""

    clip_id: str
    span: Span
    frames: np.ndarray | None = None          # small analysis frames [T,H,W,3] uint8
    frame_fps: float = 0.0
    renditions: dict[str, Path] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    descriptors: dict[str, Any] = field(default_factory=dict)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    caption: str = ""
    caption_source: str = ""
    tags: list[str] = field(default_factory=list)
    visual_embedding: np.ndarray | None = None
    keyframe_embeddings: np.ndarray | None = None   # [K, D] embeddings of evenly spaced frames
    text_embedding: np.ndarray | None = None
    phash: list[int] = field(default_factory=list)
    duplicate_of: str | None = None

    @property
    def accepted(self) -> bool:
        return not self.rejections

    def reject(self, filter: str, reason: str, value: float | None = None, threshold: float | None = None) -> None:
        self.rejections.append({"filter": filter, "reason": reason, "value": value, "threshold": threshold})


@dataclass
class VideoTask:
    """One source video; stages fill `clips` and the per-video fields."""

    video_id: str
    path: Path
    workdir: Path
    info: dict[str, Any]
    attributes: dict[str, str] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)
    clips: list[ClipTask] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> list[ClipTask]:
        return [c for c in self.clips if c.accepted]


TASK_FIELDS = {f.name for f in fields(VideoTask)} | {f"clip.{f.name}" for f in fields(ClipTask)}


class Stage(ABC):
    """Subclasses set name/inputs/outputs/resources and implement process(task)."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources()

    def setup(self) -> None:
        """Loads models or opens clients once, before the first task."""

    @abstractmethod
    def process(self, task: VideoTask) -> None:
        """Reads `inputs`, writes `outputs` on the task (in place)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "resources": asdict(self.resources)}


@dataclass
class StageStats:
    clips_in: int = 0
    clips_out: int = 0
    seconds: float = 0.0


ProgressFn = Callable[[str, int, int], None]  # (stage name, stages done, stages total)


class Pipeline:
    INITIAL = ("video_id", "path", "workdir", "info", "attributes")

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self.validate()
        self._ready = False

    def validate(self) -> None:
        available = set(self.INITIAL)
        for stage in self.stages:
            for name in (*stage.inputs, *stage.outputs):
                if name not in TASK_FIELDS:
                    raise ValueError(f"stage {stage.name} declares unknown field {name!r}")
            missing = [i for i in stage.inputs if i not in available]
            if missing:
                raise ValueError(f"stage {stage.name} reads {missing}, which no earlier stage writes")
            available.update(stage.outputs)

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.stages]

    def setup(self) -> None:
        if not self._ready:
            for stage in self.stages:
                stage.setup()
            self._ready = True

    def run(self, task: VideoTask, progress: ProgressFn | None = None) -> dict[str, StageStats]:
        """Runs every stage in order; returns per-stage clip counts and time."""
        self.setup()
        stats: dict[str, StageStats] = {}
        for i, stage in enumerate(self.stages):
            st = StageStats(clips_in=len(task.accepted))
            start = time.perf_counter()
            stage.process(task)
            st.seconds = time.perf_counter() - start
            st.clips_out = len(task.accepted)
            stats[stage.name] = st
            log.debug("stage %s: %d -> %d clips in %.2fs", stage.name, st.clips_in, st.clips_out, st.seconds)
            if progress:
                progress(stage.name, i + 1, len(self.stages))
        return stats
