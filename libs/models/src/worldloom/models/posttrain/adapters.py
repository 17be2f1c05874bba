"""LoRA adapters on disk: saved apart from their base, loaded back onto it, or merged into a plain model.

Why a separate file: a post-trained LoRA model differs from its base only in the adapter matrices (and in
any new module, e.g. a new embodiment's action encoder), a few percent of the weights. Served on top of
a cached base it costs a small download per model instead of a full copy.

The file follows :mod:`worldloom.models.checkpoint`: ``<name>.safetensors`` (the ``lora_A`` / ``lora_B``
matrices under their layer's name, plus the new modules' full tensors) and the JSON sidecar with the
format ``worldloom-lora-adapter``, the model config *after* post-training (it may carry a new action
spec), the family, the base model's id and the SHA-256 of its weights file, the LoRA settings (rank,
alpha, dropout, the resolved target layers) and the new modules. Loading checks all of that against the
base before anything is changed.

:func:`merge` folds each adapter into its layer (``W + B @ A * alpha / rank``, peft's merge) and removes
the wrappers: the result is a plain model whose state dict matches a model built from the config, saved
with :func:`~worldloom.models.world.factory.save_world_checkpoint` like any other.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from worldloom.models.checkpoint import CheckpointError, TrainState, read_checkpoint, restore_optimizer, save_checkpoint
from worldloom.models.posttrain.actions import resize_actions
from worldloom.models.posttrain.methods import LoraOptions, PosttrainError, Prepared, has_adapters, prepare
from worldloom.models.world.base import WorldModel
from worldloom.models.world.factory import model_config

FORMAT = "worldloom-lora-adapter"


def adapter_tensors(model: WorldModel, prepared: Prepared) -> dict[str, Tensor]:
    """The adapter's tensors: peft's adapter state (``<layer>.lora_A.weight`` ...) and the new modules'."""
    from peft import get_peft_model_state_dict

    if prepared.method != "lora" or not has_adapters(model):
        raise PosttrainError("not_lora", "the model carries no LoRA adapter (prepare it with method 'lora')")
    out = dict(get_peft_model_state_dict(model))
    for name in prepared.new_modules:
        out.update({f"{name}.{k}": v for k, v in model.get_submodule(name).state_dict().items()})
    return out


def save_adapter(path: str | os.PathLike[str], model: WorldModel, prepared: Prepared, *, base_model: str,
                 base_sha256: str, optimizer: torch.optim.Optimizer | None = None, step: int = 0,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter of a model prepared with ``method="lora"`` (see the module docstring); with
    ``optimizer`` (built over the trainable parameters) also its state, for :func:`resume_state`."""
    assert prepared.lora is not None
    lora = {**prepared.lora.to_dict(), "target_modules": list(prepared.lora_targets)}
    meta = {"family": model.family, "base_model": base_model, "base_sha256": base_sha256, "lora": lora,
            "new_modules": list(prepared.new_modules)}
    return save_checkpoint(path, adapter_tensors(model, prepared), format=FORMAT, config=model.config.to_dict(),
                           meta=meta, optimizer=optimizer, step=step, extra=extra)


def resume_state(path: str | os.PathLike[str], optimizer: torch.optim.Optimizer | None = None,
                 device: str = "cpu") -> TrainState:
    """Step and ``extra`` of a saved adapter, restoring ``optimizer`` when the file has its state.

    A resumed LoRA job rebuilds its base, :func:`load_adapter` s its last adapter checkpoint, builds the
    optimiser over the trainable parameters (the same ones in the same order) and calls this."""
    ckpt = read_checkpoint(path, format=FORMAT, device=device)
    state = ckpt.state
    if optimizer is not None:
        state.optimizer_restored = restore_optimizer(optimizer, ckpt, device)
    return state


def load_adapter(path: str | os.PathLike[str], model: WorldModel, *, base_sha256: str | None = None,
                 device: str = "cpu") -> Prepared:
    """Put a saved adapter onto its base ``model`` (in place; resizing the action encoder when the adapter
    was trained for another embodiment). ``base_sha256``: the base weights' hash, checked against the
    adapter's record. A file that does not fit (another family, config or base; missing or extra tensors)
    is a :class:`CheckpointError` and leaves ``model`` untouched."""
    from peft import set_peft_model_state_dict

    ckpt = read_checkpoint(path, format=FORMAT, device=device)
    meta = ckpt.meta
    if meta.get("family") != model.family:
        raise CheckpointError(f"{path}: a {meta.get('family')} adapter, the base is a {model.family} model")
    if base_sha256 is not None and meta.get("base_sha256") != base_sha256:
        raise CheckpointError(f"{path}: trained on base {meta.get('base_model')} (weights sha256 "
                              f"{str(meta.get('base_sha256'))[:12]}...), not on this base")
    if has_adapters(model):
        raise CheckpointError(f"{path}: the model already carries an adapter")
    try:
        config = model_config(model.family, ckpt.config)
        lora = meta["lora"]
        opts = LoraOptions(int(lora["rank"]), int(lora["alpha"]), float(lora["dropout"]),
                           tuple(lora["target_modules"]))
        new = tuple(str(n) for n in meta.get("new_modules", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad adapter sidecar ({exc})") from None
    if config.action != model.action_spec and "actions" not in new:
        raise CheckpointError(f"{path}: the adapter's action spec differs from the base's but it has no new action encoder")
    if _without_action(config) != _without_action(model.config):
        raise CheckpointError(f"{path}: the adapter's model config differs from the base's (another base model?)")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    old_config, old_actions = model.config, model.actions
    try:
        if config.action != model.action_spec:
            resize_actions(model, config.action, resize=True)
        _, prepared = prepare(model, "lora", lora=opts, new_modules=new)
        expected = set(adapter_tensors(model, prepared))
        if set(ckpt.weights) != expected:
            missing, unexpected = sorted(expected - set(ckpt.weights)), sorted(set(ckpt.weights) - expected)
            raise CheckpointError(f"{path}: adapter tensors do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
        lora_part = {k: v for k, v in ckpt.weights.items() if not any(k.startswith(n + ".") for n in new)}
        set_peft_model_state_dict(model, lora_part)
        for name in new:
            sub = {k[len(name) + 1:]: v for k, v in ckpt.weights.items() if k.startswith(name + ".")}
            model.get_submodule(name).load_state_dict(sub, strict=True)
    except (PosttrainError, RuntimeError, CheckpointError) as exc:
        _unload(model)
        model.actions, model.config = old_actions, old_config
        model.load_state_dict(state, strict=True)
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: adapter does not fit the base: {exc}") from None
    return prepared


def merge(model: WorldModel) -> int:
    """Fold every LoRA adapter into its Linear layer and drop the wrappers (in place); returns how many
    layers were merged. Afterwards every weight is trainable again, as in a freshly built model."""
    merged = 0
    for name, module in list(model.named_modules()):
        base = getattr(module, "get_base_layer", None)
        if base is None or not type(module).__module__.startswith("peft."):
            continue
        module.merge(safe_merge=True)  # raises on NaN/inf in the merged weight
        _replace(model, name, base())
        merged += 1
    _forget_peft(model)
    model.requires_grad_(True)
    return merged


def _unload(model: WorldModel) -> None:
    """Drop adapters without merging (restores the base layers)."""
    for name, module in list(model.named_modules()):
        base = getattr(module, "get_base_layer", None)
        if base is not None and type(module).__module__.startswith("peft."):
            _replace(model, name, base())
    _forget_peft(model)


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, layer)


def _forget_peft(model: WorldModel) -> None:
    if "peft_config" in model.__dict__:  # set by inject_adapter_in_model
        del model.__dict__["peft_config"]


def _without_action(config: Any) -> Any:
    return dataclasses.replace(config, action=None)
