"""World-model families by name, and checkpoints of any family.

The family name (``"ar"``, ``"diffusion"``) is what requests, registry records and checkpoint sidecars
carry; this module is the one place that maps it to a class. A new family is a :class:`~.base.WorldModel`
subclass in its own file, registered in :data:`FAMILIES`.
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
    read_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from worldloom.models.world.autoregressive import ARWorldModel
from worldloom.models.world.base import WorldModel
from worldloom.models.world.diffusion import DiffusionWorldModel

FORMAT = "worldloom-world-model"
FAMILIES: dict[str, type[WorldModel]] = {cls.family: cls for cls in (ARWorldModel, DiffusionWorldModel)}


def family_class(family: str) -> type[WorldModel]:
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}") from None


def model_config(family: str, config: dict[str, Any]) -> Any:
    """The family's config object from its dict form (ValueError when it does not fit)."""
    try:
        return family_class(family).config_class.from_dict(dict(config))
    except TypeError as exc:
        raise ValueError(f"bad {family} model config: {exc}") from exc


def build_model(family: str, config: dict[str, Any]) -> WorldModel:
    return family_class(family)(model_config(family, config))


def build_skeleton(family: str, config: dict[str, Any]) -> WorldModel:
    """The architecture on the ``meta`` device (names and shapes, no memory, no init): what a service
    checks a request against (LoRA targets, heads, a new action encoder) before anything is trained.
    The device context is thread-local, so training threads of the same process are not affected."""
    with torch.device("meta"):
        return build_model(family, config)


def save_world_checkpoint(path: str | os.PathLike[str], model: WorldModel, *,
                          optimizer: torch.optim.Optimizer | None = None, step: int = 0,
                          extra: dict[str, Any] | None = None) -> Path:
    """Weights (+ optimiser tensors) and a sidecar ``{family, config, step, ...}`` (see
    :mod:`worldloom.models.checkpoint`: atomic writes, SHA-256s, no pickle)."""
    return save_checkpoint(path, model.state_dict(), format=FORMAT, config=model.config.to_dict(),
                           meta={"family": model.family}, optimizer=optimizer, step=step, extra=extra)


def load_world_checkpoint(path: str | os.PathLike[str], *, model: WorldModel | None = None,
                          optimizer: torch.optim.Optimizer | None = None,
                          device: str = "cpu") -> tuple[WorldModel, TrainState]:
    """Load weights (strict) into ``model`` or a model rebuilt from the sidecar; restore the optimiser."""
    if optimizer is not None and model is None:
        raise ValueError("pass the model the optimizer was built over together with the optimizer")
    ckpt = read_checkpoint(path, format=FORMAT, device=device)
    family = str(ckpt.meta.get("family", ""))
    try:
        rebuilt = build_model(family, ckpt.config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if model is None:
        model = rebuilt.to(device)
    elif model.family != family or model.config != rebuilt.config:
        raise CheckpointError(f"{path}: checkpoint {family} config differs from the model's")
    load_weights(model, ckpt)
    state = ckpt.state
    if optimizer is not None:
        state.optimizer_restored = restore_optimizer(optimizer, ckpt, device)
    return model, state
