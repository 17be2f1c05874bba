"""A new embodiment's actions on a pretrained world model: the action encoder is added, resized or replaced,
every other weight is kept as it is.

Why only the encoder: actions enter both families through one module (:class:`ActionEncoder`, its output
added to the frame token / the per-frame adaLN vector); the trunk that carries the dynamics never sees the
raw width. What is kept of the old encoder, so the trunk starts from inputs it knows:

* continuous ``D -> D'``: the hidden->d_model layer, the ``null`` vector, and the input columns of the
  first ``min(D, D')`` dimensions (values and their mask columns); the columns of new dimensions start at
  zero, so at first the model treats them as absent and the old dimensions behave exactly as before;
* discrete ``n -> n'``: the embeddings of the first ``min(n, n')`` ids; new ids start at the mean of the old
  ones (a neutral "some action"), distinct once trained;
* another kind (continuous <-> discrete): nothing but ``null``; the new encoder's output layer starts at
  zero, so the model predicts as before until it learns the new actions;
* added (the base took no actions): a fresh encoder whose output starts at zero (``null`` included) for
  the same reason: the base's predictions are unchanged at step 0.

A narrower width (``D' <= D``) or fewer discrete ids already fit the encoder (narrower vectors are
zero-padded with a validity mask): without ``resize`` they are kept as they are; anything that does not
fit is refused unless ``resize`` is asked for (the service's ``resize_actions`` flag).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from worldloom.models.posttrain.methods import PosttrainError, has_adapters
from worldloom.models.world.base import WorldModel
from worldloom.models.world.common import ActionEncoder, ActionSpec, coerce_action_spec

Change = Literal["kept", "resized", "replaced", "added"]


@dataclass(frozen=True)
class ActionChange:
    """What :func:`resize_actions` did; ``new_modules`` is what :func:`~.methods.prepare` trains whole."""

    change: Change
    old: ActionSpec | None
    new: ActionSpec

    @property
    def new_modules(self) -> tuple[str, ...]:
        return () if self.change == "kept" else ("actions",)

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "old": dataclasses.asdict(self.old) if self.old else None,
                "new": dataclasses.asdict(self.new), "new_modules": list(self.new_modules)}


def fits(old: ActionSpec | None, new: ActionSpec) -> bool:
    """Whether actions of ``new`` go through an encoder built for ``old`` unchanged."""
    if old is None or old.kind != new.kind:
        return False
    return new.dim <= old.dim if new.kind == "continuous" else new.num_actions <= old.num_actions


def resize_actions(model: WorldModel, new_spec: ActionSpec | dict[str, Any], *, resize: bool = False) -> ActionChange:
    """Give ``model`` (in place) an action encoder for ``new_spec``; see the module docstring.

    ``resize=False``: a spec that fits the current encoder keeps it, any other is refused
    (``action_mismatch``). ``resize=True``: the encoder is rebuilt for exactly ``new_spec`` (unless it is
    the current one) and the model's config says so, so checkpoints saved afterwards rebuild it."""
    try:
        spec = coerce_action_spec(new_spec)
    except (TypeError, ValueError) as exc:
        raise PosttrainError("invalid_action_spec", f"bad action spec: {exc}") from None
    if spec is None:
        raise PosttrainError("invalid_action_spec", "an action spec is required (kind and dim / num_actions)")
    if has_adapters(model):
        raise PosttrainError("already_prepared", "resize the action encoder before adding LoRA adapters")
    old = model.action_spec
    if old == spec or (fits(old, spec) and not resize):
        return ActionChange("kept", old, spec)
    if not resize:
        have = "takes no actions" if old is None else f"takes {_words(old)}"
        raise PosttrainError("action_mismatch", f"the base model {have}; these episodes have {_words(spec)}: "
                             "post-train with resize_actions to give it a new action encoder")
    d_model = int(model.config.d_model)
    ref = next(model.parameters())
    enc = ActionEncoder(spec, d_model).to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        if old is None or model.actions is None:
            change: Change = "added"
            _zero_output(enc)
            enc.null.zero_()
        elif old.kind != spec.kind:
            change = "replaced"
            _zero_output(enc)
            enc.null.copy_(model.actions.null)
        else:
            change = "resized"
            _copy_overlap(model.actions, enc)
    model.actions = enc
    model.config = dataclasses.replace(model.config, action=spec)
    return ActionChange(change, old, spec)


def _words(spec: ActionSpec) -> str:
    if spec.kind == "continuous":
        return f"continuous actions of width {spec.dim}"
    return f"discrete actions ({spec.num_actions} ids)"


def _zero_output(enc: ActionEncoder) -> None:
    if enc.spec.kind == "continuous":
        last = enc.proj[2]
        assert isinstance(last, nn.Linear)
        last.weight.zero_()
        last.bias.zero_()
    else:
        enc.embed.weight.zero_()


def _copy_overlap(old: ActionEncoder, new: ActionEncoder) -> None:
    new.null.copy_(old.null)
    if new.spec.kind == "discrete":
        n = min(old.spec.num_actions, new.spec.num_actions)
        new.embed.weight.copy_(old.embed.weight.mean(0).expand_as(new.embed.weight))
        new.embed.weight[:n] = old.embed.weight[:n]
        return
    src, dst = old.proj[0], new.proj[0]
    assert isinstance(src, nn.Linear) and isinstance(dst, nn.Linear)
    d_old, d_new = old.spec.dim, new.spec.dim
    m = min(d_old, d_new)
    dst.weight.zero_()
    dst.weight[:, :m] = src.weight[:, :m]  # values of the shared dimensions
    dst.weight[:, d_new:d_new + m] = src.weight[:, d_old:d_old + m]  # their validity-mask columns
    dst.bias.copy_(src.bias)
    new.proj[2].load_state_dict(old.proj[2].state_dict())
