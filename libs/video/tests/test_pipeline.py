"""The stage runner: validation before running, rejected clips leave the working list, stage slots."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from worldloom.testkit.media import clip_task
from worldloom.video.pipeline import Pipeline, Resources, Stage, VideoTask


@dataclass
class RejectOdd(Stage):
    name: ClassVar[str] = "reject_odd"
    outputs = ("clip.rejections",)

    seen: list[str]

    def process(self, task: VideoTask) -> None:
        for clip in task.clips:
            self.seen.append(clip.clip_id)
            if int(clip.clip_id[1:]) % 2:
                clip.reject("odd", "odd clips go", 1.0, 0.0)


@dataclass
class Busy(Stage):
    """Records how many executions overlap."""

    name: ClassVar[str] = "busy"
    resources = Resources(cpus=1.0, memory_mb=1)

    state: dict[str, int]
    lock: threading.Lock

    def process(self, task: VideoTask) -> None:
        with self.lock:
            self.state["now"] += 1
            self.state["max"] = max(self.state["max"], self.state["now"])
        time.sleep(0.05)
        with self.lock:
            self.state["now"] -= 1


def _task(tmp_path: Path, n: int) -> VideoTask:
    task = VideoTask("vid", tmp_path / "v.mp4", tmp_path, {})
    task.clips = [clip_task(f"c{i}", np.zeros((2, 8, 8, 3), np.uint8), start_frame=10 * i) for i in range(n)]
    return task


def test_rejected_clips_leave_the_working_list_after_each_stage(tmp_path: Path) -> None:
    first, second = RejectOdd([]), RejectOdd([])
    second.name = "again"  # type: ignore[misc]
    task = _task(tmp_path, 4)
    stats = Pipeline([first, second]).run(task)
    assert second.seen == ["c0", "c2"]  # the second stage never sees what the first rejected
    assert [c.clip_id for c in task.clips] == ["c0", "c2"] and [c.clip_id for c in task.filtered_clips] == ["c1", "c3"]
    assert [c.clip_id for c in task.all_clips()] == ["c0", "c1", "c2", "c3"]
    assert (stats["reject_odd"].clips_in, stats["reject_odd"].clips_out) == (4, 2)
    assert task.filtered_clips[0].rejections[0].to_dict() == {"filter": "odd", "reason": "odd clips go",
                                                               "value": 1.0, "threshold": 0.0}


def test_a_pipeline_is_checked_before_it_runs() -> None:
    @dataclass
    class ReadsEmbeddings(Stage):
        name: ClassVar[str] = "reads"
        inputs = ("clips", "clip.text_embedding")

        def process(self, task: VideoTask) -> None: ...

    @dataclass
    class Unknown(Stage):
        name: ClassVar[str] = "unknown"
        outputs = ("clip.colour",)

        def process(self, task: VideoTask) -> None: ...

    @dataclass
    class NeedsGpu(Stage):
        name: ClassVar[str] = "gpu"
        resources = Resources(cpus=1, gpus=1, memory_mb=1)

        def process(self, task: VideoTask) -> None: ...

    with pytest.raises(ValueError, match="no earlier stage writes"):
        Pipeline([ReadsEmbeddings()])
    with pytest.raises(ValueError, match="unknown field 'clip.colour'"):
        Pipeline([Unknown()])
    with pytest.raises(ValueError, match="needs 1 GPUs"):
        Pipeline([NeedsGpu()], budget=Resources(cpus=4, gpus=0, memory_mb=1024))
    assert Pipeline([NeedsGpu()], budget=Resources(cpus=4, gpus=1, memory_mb=1024)).describe()[0]["resources"]["gpus"] == 1


@pytest.mark.parametrize("cpus, most", [(1, 1), (2, 2)])
def test_stage_slots_bound_concurrent_videos(tmp_path: Path, cpus: int, most: int) -> None:
    state = {"now": 0, "max": 0}
    pipeline = Pipeline([Busy(state, threading.Lock())], budget=Resources(cpus=cpus, memory_mb=1024))
    threads = [threading.Thread(target=pipeline.run, args=(_task(tmp_path, 1),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["max"] == most


def test_slots_from_resources() -> None:
    machine = Resources(cpus=8, gpus=1, memory_mb=4096)
    assert Resources(cpus=1.0, memory_mb=512).slots(machine) == 8
    assert Resources(cpus=0.5, memory_mb=2048).slots(machine) == 2  # memory binds first
    assert Resources(cpus=16, memory_mb=1).slots(machine) == 1  # larger than the machine: runs alone
    assert Resources(cpus=1, gpus=2, memory_mb=1).slots(machine) == 0
    assert Resources.machine().cpus >= 1
