"""A small stage/pipeline framework in the style of NeMo Curator and cosmos-curate.

A stage is a dataclass whose fields are its config. It declares the task fields it reads and writes and
the resources one execution of it holds, so a pipeline can be described (GET /v1/curation-runs/{id} shows
it), validated before it runs (a stage reading a field no earlier stage writes is a configuration error),
and admitted by the runner: at most ``budget // resources`` executions of a stage run at once, however
many videos are in flight, so a CPU-heavy stage never oversubscribes the machine.

A stage rejects a clip with ``clip.reject(...)``; when the stage returns, the runner moves rejected clips
from ``VideoTask.clips`` to ``VideoTask.filtered_clips``, so every stage sees only the clips still in the
running and the writer still records why the others were dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from worldloom.core.catalog import ClipRecord, Rejection
from worldloom.core.scratch import without_paths
from worldloom.video.split import Span

log = logging.getLogger("worldloom.pipeline")


@dataclass(frozen=True)
class Resources:
    """What one execution of a stage holds (or, as a budget, what the runner may hand out)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 512

    @classmethod
    def machine(cls) -> Resources:
        """This process's CPUs and the machine's memory; no GPUs: a GPU stage needs an explicit budget."""
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
        try:
            memory_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
        except (AttributeError, ValueError, OSError):
            memory_mb = 4096
        return cls(cpus=float(cpus), gpus=0.0, memory_mb=int(memory_mb))

    def slots(self, budget: Resources) -> int:
        """How many executions needing these resources fit in ``budget`` at once: at least one (a stage
        larger than the machine runs alone), or none when it needs more GPUs than the budget has."""
        if self.gpus > budget.gpus:
            return 0
        ratios = [have // need for need, have in ((self.cpus, budget.cpus), (self.gpus, budget.gpus),
                                                  (self.memory_mb, budget.memory_mb)) if need > 0]
        return max(1, int(min(ratios))) if ratios else 1 << 16


@dataclass
class ClipTask:
    """One candidate clip as it moves through the stages; a rejected clip keeps its reasons."""

    clip_id: str
    span: Span
    frames: np.ndarray | None = None          # small analysis frames [T,H,W,3] uint8
    frame_fps: float = 0.0
    renditions: dict[str, Path] = field(default_factory=dict)  # name (train.mp4, thumb.jpg...) -> local file
    rendition_info: dict[str, dict[str, float]] = field(default_factory=dict)  # video rendition -> width, height, fps...
    scores: dict[str, float] = field(default_factory=dict)
    descriptors: dict[str, Any] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
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
        reason = without_paths(reason)  # a decoder's message may name the scratch file; the record is public
        self.rejections.append(Rejection(filter=filter, reason=reason, value=value, threshold=threshold))

    # for stages that declare these inputs: the pipeline has checked that an earlier stage writes them
    def require_frames(self) -> np.ndarray:
        return _written(self.frames, self.clip_id, "clip.frames")

    def require_visual_embedding(self) -> np.ndarray:
        return _written(self.visual_embedding, self.clip_id, "clip.visual_embedding")


def _written(value: np.ndarray | None, clip_id: str, name: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"clip {clip_id} has no {name}: the stage that writes it did not run or left it unset")
    return value


@dataclass
class VideoTask:
    """One source video; stages fill `clips` and the per-video fields."""

    video_id: str
    path: Path
    workdir: Path
    info: dict[str, Any]
    attributes: dict[str, str] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)
    clips: list[ClipTask] = field(default_factory=list)           # still in the running
    filtered_clips: list[ClipTask] = field(default_factory=list)  # rejected by a stage, with reasons
    errors: list[str] = field(default_factory=list)
    records: list[ClipRecord] = field(default_factory=list)       # what the writer stored, every clip
    shard_keys: list[str] = field(default_factory=list)

    def drop_rejected(self) -> None:
        """Moves clips with a rejection from `clips` to `filtered_clips` (the runner does, after each stage)."""
        self.filtered_clips.extend(c for c in self.clips if not c.accepted)
        self.clips = [c for c in self.clips if c.accepted]

    def all_clips(self) -> list[ClipTask]:
        """Accepted and rejected clips together, in span order."""
        return sorted([*self.clips, *self.filtered_clips], key=lambda c: (c.span.start_frame, c.span.end_frame))


TASK_FIELDS = {f.name for f in fields(VideoTask)} | {f"clip.{f.name}" for f in fields(ClipTask)}


class Stage(ABC):
    """Subclasses are dataclasses (their fields are their config), set name/inputs/outputs/resources and
    implement process(task) over ``task.clips``."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources()

    def setup(self) -> None:
        """Loads models or opens clients once, before the first task."""
        return None  # an optional hook, not an abstract method

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
    """Runs stages in order on one video at a time per caller; callers may run videos in parallel, and
    the per-stage slots (from each stage's resources and the budget) bound how many share a stage."""

    INITIAL = ("video_id", "path", "workdir", "info", "attributes", "filtered_clips")  # the runner keeps filtered_clips

    def __init__(self, stages: list[Stage], budget: Resources | None = None) -> None:
        self.stages = stages
        self.budget = budget or Resources.machine()
        self.validate()
        self._slots = [threading.BoundedSemaphore(s.resources.slots(self.budget)) for s in stages]
        self._ready = False
        self._setup_lock = threading.Lock()

    def validate(self) -> None:
        available = set(self.INITIAL)
        for stage in self.stages:
            for name in (*stage.inputs, *stage.outputs):
                if name not in TASK_FIELDS:
                    raise ValueError(f"stage {stage.name} declares unknown field {name!r}")
            missing = [i for i in stage.inputs if i not in available]
            if missing:
                raise ValueError(f"stage {stage.name} reads {missing}, which no earlier stage writes")
            if stage.resources.slots(self.budget) == 0:
                raise ValueError(f"stage {stage.name} needs {stage.resources.gpus} GPUs; the budget has {self.budget.gpus}")
            available.update(stage.outputs)

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.stages]

    def setup(self) -> None:
        with self._setup_lock:
            if not self._ready:
                for stage in self.stages:
                    stage.setup()
                self._ready = True

    def run(self, task: VideoTask, progress: ProgressFn | None = None) -> dict[str, StageStats]:
        """Runs every stage in order; returns per-stage clip counts and time (waiting for a slot excluded)."""
        self.setup()
        stats: dict[str, StageStats] = {}
        for i, stage in enumerate(self.stages):
            st = StageStats(clips_in=len(task.clips))
            with self._slots[i]:
                start = time.perf_counter()
                stage.process(task)
                st.seconds = time.perf_counter() - start
            task.drop_rejected()
            st.clips_out = len(task.clips)
            stats[stage.name] = st
            log.debug("stage %s: %d -> %d clips in %.2fs", stage.name, st.clips_in, st.clips_out, st.seconds)
            if progress:
                progress(stage.name, i + 1, len(self.stages))
        return stats
