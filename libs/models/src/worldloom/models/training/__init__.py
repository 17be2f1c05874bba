"""Training infrastructure shared by every model family: Ray Train launch, store checkpoints."""

from worldloom.models.training.ray_runner import (
    ScalingSpec,
    TrainingFailed,
    WorkerInfo,
    ensure_ray,
    run_torch_trainer,
    worker_info,
)
from worldloom.models.training.store_checkpoints import StoreCheckpoints

__all__ = ["ScalingSpec", "StoreCheckpoints", "TrainingFailed", "WorkerInfo", "ensure_ray", "run_torch_trainer",
           "worker_info"]
