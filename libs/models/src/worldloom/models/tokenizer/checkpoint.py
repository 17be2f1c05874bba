"""Tokenizer checkpoints: :mod:`worldloom.models.checkpoint` files (safetensors + JSON sidecar, never
pickle) whose config is a :class:`TokenizerConfig`.

``save_checkpoint("run/tok.safetensors", model, optimizer=opt, step=n)`` writes ``tok.safetensors``,
``tok.optim.safetensors`` (with ``optimizer=``) and ``tok.json``; :func:`load_checkpoint` rebuilds the
model from the sidecar (or, without one, from the config in the weights' header).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from worldloom.models.checkpoint import (
    CheckpointError,
    TrainState,
    load_weights,
    optimizer_path,
    read_checkpoint,
    read_safetensors,
    restore_optimizer,
    sidecar_path,
)
from worldloom.models.checkpoint import save_checkpoint as _save
from worldloom.models.tokenizer.model import CausalVideoTokenizer, TokenizerConfig

FORMAT = "worldloom-tokenizer"

__all__ = ["FORMAT", "CheckpointError", "TrainState", "load_checkpoint", "optimizer_path", "read_safetensors",
           "save_checkpoint", "sidecar_path"]


def save_checkpoint(path: str | os.PathLike[str], model: CausalVideoTokenizer, *,
                    optimizer: torch.optim.Optimizer | None = None, step: int = 0,
                    extra: dict[str, Any] | None = None) -> Path:
    """Weights (+ optimiser tensors) and the sidecar; returns the weights path."""
    return _save(path, model.state_dict(), format=FORMAT, config=model.config.to_dict(), optimizer=optimizer,
                 step=step, extra=extra)


def load_checkpoint(path: str | os.PathLike[str], *, model: CausalVideoTokenizer | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    device: str = "cpu") -> tuple[CausalVideoTokenizer, TrainState]:
    """Load weights (strict) into ``model``, or into a model rebuilt from the checkpoint's config.

    To resume training pass the ``model`` and the ``optimizer`` built over its parameters; the optimiser
    state is restored when the checkpoint has one (``TrainState.optimizer_restored``)."""
    if optimizer is not None and model is None:
        raise ValueError("pass the model the optimizer was built over together with the optimizer")
    ckpt = read_checkpoint(path, format=FORMAT, device=device, require_sidecar=False)
    config = TokenizerConfig.from_dict(ckpt.config)
    if model is None:
        model = CausalVideoTokenizer(config).to(device)
    elif model.config != config:
        raise CheckpointError(f"{path}: checkpoint config {config} differs from the model's {model.config}")
    load_weights(model, ckpt)
    state = ckpt.state
    if optimizer is not None:
        state.optimizer_restored = restore_optimizer(optimizer, ckpt, device)
    return model, state
