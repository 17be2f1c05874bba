"""Training infrastructure shared by every model kind: Ray Train launch, worker scaffolding, schedule."""

from worldloom.models.training.ray_runner import (
    ScalingSpec,
    TrainingFailed,
    WorkerInfo,
    ensure_ray,
    run_torch_trainer,
    worker_info,
)

__all__ = ["ScalingSpec", "TrainingFailed", "WorkerInfo", "ensure_ray", "run_torch_trainer",
           "worker_info"]
