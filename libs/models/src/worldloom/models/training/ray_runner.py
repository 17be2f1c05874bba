"""Running a per-worker training loop on Ray Train (``TorchTrainer``), locally or on a cluster.

Embedded mode starts a private local Ray (node IP 127.0.0.1, no dashboard) the first time it is
needed; with ``address`` set it joins an existing cluster (e.g. a KubeRay head). DDP uses gloo on CPU
and NCCL on GPU (Ray Train's default per device). Worker crashes are retried by Ray up to
``max_failures`` times; the loop itself resumes from the last checkpoint in the object store, so a
restarted worker group carries on instead of starting over.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_init_lock = threading.Lock()


@dataclass(frozen=True)
class ScalingSpec:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        if self.cpus_per_worker <= 0:
            raise ValueError("cpus_per_worker must be > 0")


class TrainingFailed(RuntimeError):
    """The Ray training run ended with an error (after Ray's own retries)."""


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` or start a local, loopback-only Ray once per process."""
    if not address:
        # Ray turns 127.0.0.1 into the host's "reachable" address (its node IP, which every Ray process binds
        # and dials) unless multi-node clusters are off; a private local cluster has no other node
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    with _init_lock:
        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address:
            ray.init(address=address, log_to_driver=False)
            return
        # the same switch for a process that imported ray before the variable was set: Ray reads it once at
        # import, into a constant its address helpers read at call time (no public API sets it)
        constants: Any = importlib.import_module("ray._private.ray_constants")
        constants.ENABLE_RAY_CLUSTER = False
        # address="local" and a private temp dir: always a fresh cluster of our own, never one another
        # process on this machine started (two embedded services or a benchmark must not share or stop it)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, _node_ip_address="127.0.0.1",
                 include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _temp_dir=tempfile.mkdtemp(prefix="wl-ray-"),
                 runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})


def run_torch_trainer(loop: Callable[[dict[str, Any]], None], config: dict[str, Any], scaling: ScalingSpec,
                      name: str, *, address: str | None = None, storage_path: str | None = None) -> None:
    """Run ``loop(config)`` on ``scaling.num_workers`` Ray Train workers and wait for it."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    ensure_ray(address, num_cpus=None if address else max(os.cpu_count() or 1,
                                                           int(scaling.num_workers * scaling.cpus_per_worker)))
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path or os.path.join(tempfile.gettempdir(), "worldloom-ray"),
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors in its own types; keep the message
        raise TrainingFailed(_root_message(exc)) from exc
    if result.error is not None:
        raise TrainingFailed(_root_message(result.error))


def _root_message(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


@dataclass(frozen=True)
class WorkerInfo:
    rank: int
    world_size: int
    local_rank: int


def worker_info() -> WorkerInfo:
    """Rank and world size inside a Ray Train worker; (0, 1, 0) when the loop runs in-process."""
    try:
        import ray.train

        ctx = ray.train.get_context()
        return WorkerInfo(ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_rank())
    except Exception:
        return WorkerInfo(0, 1, 0)
