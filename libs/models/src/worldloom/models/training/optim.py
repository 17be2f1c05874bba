"""The learning-rate schedule and mixed precision every training loop uses (tokenizers, world models)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch


def lr_at(step: int, steps: int, lr: float, warmup: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up then cosine decay to ``min_ratio * lr`` (a short run ends at a low, precise lr)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def default_warmup(steps: int) -> int:
    """5 % of the run, at most 100 steps: long enough to settle Adam's moments, short for tiny runs."""
    return min(100, max(1, steps // 20))


def set_lr(optimizer: torch.optim.Optimizer, step: int, steps: int, lr: float, warmup: int | None = None) -> float:
    """Apply the schedule's rate for ``step`` to every parameter group; returns it."""
    rate = lr_at(step, steps, lr, default_warmup(steps) if warmup is None else warmup)
    for group in optimizer.param_groups:
        group["lr"] = rate
    return rate


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); a no-op (fp32) elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
