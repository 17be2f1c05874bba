"""What every training loop does around its own steps on a Ray Train worker (or in-process).

Rank 0 owns the progress file; all ranks agree on cancellation (rank 0 reads the marker and broadcasts
the decision, so no rank is left waiting in an all-reduce); an error is recorded on the progress before
it propagates (Ray may restart the worker group, which then resumes from the last checkpoint).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from worldloom.core.jobs import ProgressWriter
from worldloom.core.settings import StoreSettings
from worldloom.core.store.base import ObjectStore
from worldloom.core.store.factory import make_store
from worldloom.models.checkpoint import StoreCheckpoints
from worldloom.models.training.ray_runner import ScalingSpec, WorkerInfo, run_torch_trainer, worker_info


class JobCancelled(RuntimeError):
    """A cancel marker was seen; the loop stops at the next log step on every rank."""


@dataclass
class WorkerEnv:
    info: WorkerInfo
    store: ObjectStore
    ckpts: StoreCheckpoints
    writer: ProgressWriter | None  # rank 0 only

    def should_cancel(self) -> bool:
        """Collective: call on every rank at the same step."""
        return broadcast_flag(self.writer is not None and self.writer.cancelled())


def broadcast_flag(flag: bool) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_pids() -> list[int]:
    """Process ids of the worker group in rank order (lets operators and tests find a worker)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [os.getpid()]
    pids: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(pids, os.getpid())
    return [int(p) for p in pids]


def run_worker(store: dict[str, Any], prefix: str, steps: int, threads: int, seed: int,
               body: Callable[[WorkerEnv], None]) -> None:
    info = worker_info()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    object_store = make_store(StoreSettings(**store))
    writer = ProgressWriter(object_store, prefix, steps, workers=info.world_size) if info.rank == 0 else None
    env = WorkerEnv(info, object_store, StoreCheckpoints(object_store, prefix), writer)
    try:
        body(env)
    except JobCancelled:
        if writer is not None:
            writer.finish("cancelled", error="cancelled by user")
    except Exception as exc:
        if writer is not None:
            writer.progress.error = f"{type(exc).__name__}: {exc}"  # state stays running: Ray may retry
            writer.flush(force=True)
        raise


def launch(loop: Callable[[dict[str, Any]], None], config: dict[str, Any], scaling: ScalingSpec, *, name: str,
           address: str | None = None, in_process: bool = False) -> None:
    """Run a job's per-worker ``loop`` on Ray Train (or, with ``in_process``, here: tests and tiny runs).

    Each worker gets ``cpus_per_worker`` torch threads, so 1 worker x 2 CPUs and 2 workers x 1 CPU use the
    same cores."""
    config = {**config, "threads_per_worker": max(1, int(scaling.cpus_per_worker))}
    if in_process:
        loop(config)
        return
    run_torch_trainer(loop, config, scaling, name, address=address)
