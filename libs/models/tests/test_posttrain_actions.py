"""A new embodiment's action encoder on a pretrained model: every other weight stays bit-identical."""

from __future__ import annotations

import pytest
import torch

from worldloom.models.posttrain import PosttrainError, resize_actions
from worldloom.models.world import FAMILIES, ActionSpec, build_model, load_world_checkpoint, save_world_checkpoint

FAMILY = sorted(FAMILIES)


def _others(model):
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("actions.")}


def _same_others(model, before):
    now = _others(model)
    assert now.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(now[k], v), k


@pytest.mark.parametrize("family", FAMILY)
@pytest.mark.parametrize("new", [ActionSpec.continuous(7), ActionSpec.continuous(2), ActionSpec.discrete(6)])
def test_resize_keeps_every_other_weight_and_runs(family, new, kit, tmp_path):
    model = kit.base(family)
    old_enc = {k: v.clone() for k, v in model.actions.state_dict().items()}
    before = _others(model)
    change = resize_actions(model, new, resize=True)
    assert change.change == ("replaced" if new.kind == "discrete" else "resized")
    assert change.new_modules == ("actions",)
    assert model.action_spec == new and model.config.action == new
    _same_others(model, before)
    enc = model.actions.state_dict()
    torch.testing.assert_close(enc["null"], old_enc["null"], rtol=0, atol=0)
    if new.kind == "continuous":
        m, d_old = min(3, new.dim), 3
        w_new, w_old = enc["proj.0.weight"], old_enc["proj.0.weight"]
        assert torch.equal(w_new[:, :m], w_old[:, :m])
        assert torch.equal(w_new[:, new.dim:new.dim + m], w_old[:, d_old:d_old + m])
        assert torch.count_nonzero(w_new[:, m:new.dim]) == 0
        assert torch.equal(enc["proj.2.weight"], old_enc["proj.2.weight"])
    # runs with the new width, trains, and its checkpoint rebuilds the new encoder
    batch = kit.batch(model, seed=2)
    loss = kit.outputs(model, batch)["loss"]
    loss.backward()
    assert model.actions.null.grad is not None
    path = save_world_checkpoint(tmp_path / "m.safetensors", model)
    again, _ = load_world_checkpoint(path)
    assert again.action_spec == new
    if new.kind == "continuous":
        wider = dict(batch, actions=torch.randn(4, 2, new.dim + 1))
        with pytest.raises(ValueError, match="does not fit"):
            kit.outputs(model, wider)


@pytest.mark.parametrize("family", FAMILY)
def test_resize_continuous_starts_where_the_base_was(family, kit):
    """Zero columns for the new dimensions: on the old dimensions the resized model predicts exactly as
    before; an added encoder (the base took no actions) leaves the base's predictions unchanged."""
    model = kit.base(family)
    model.eval()
    batch = kit.batch(model, seed=2)
    with torch.no_grad():
        want = kit.outputs(model, batch)["loss"]
        resize_actions(model, ActionSpec.continuous(6), resize=True)
        padded = dict(batch, actions=torch.cat([batch["actions"], torch.zeros(4, 2, 3)], dim=-1))
        got = kit.outputs(model, padded)["loss"]
    # the mask columns of dims 3..5 are zero too, so "present and 0" equals the old "absent"
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)

    bare = kit.base(family, action=None)
    bare.eval()
    batch = kit.batch(bare, seed=2)
    with torch.no_grad():
        want = kit.outputs(bare, batch)["loss"]
        change = resize_actions(bare, ActionSpec.continuous(4), resize=True)
        got = kit.outputs(bare, dict(batch, actions=torch.randn(4, 2, 4)))["loss"]
    assert change.change == "added"
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", FAMILY)
def test_discrete_resize_keeps_old_ids(family, kit):
    model = kit.base(family, action=ActionSpec.discrete(4))
    old = model.actions.embed.weight.detach().clone()
    assert resize_actions(model, ActionSpec.discrete(9), resize=True).change == "resized"
    new = model.actions.embed.weight
    assert torch.equal(new[:4], old)
    torch.testing.assert_close(new[4:], old.mean(0).expand(5, -1))


@pytest.mark.parametrize("family", FAMILY)
def test_mismatch_refused_without_resize(family, kit):
    model = kit.build(family)  # continuous, width 3
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for spec in (ActionSpec.continuous(7), ActionSpec.discrete(3)):
        with pytest.raises(PosttrainError) as exc:
            resize_actions(model, spec)
        assert exc.value.code == "action_mismatch"
    with pytest.raises(PosttrainError) as exc:
        resize_actions(kit.build(family, action=None), ActionSpec.continuous(2))
    assert exc.value.code == "action_mismatch"
    # narrower fits as it is (zero-padded with a validity mask): kept, nothing changes
    assert resize_actions(model, ActionSpec.continuous(2)).change == "kept"
    assert resize_actions(model, {"kind": "continuous", "dim": 3}, resize=True).change == "kept"
    assert model.action_spec == ActionSpec.continuous(3)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(PosttrainError) as exc:
        resize_actions(model, {"kind": "continuous", "dim": 0}, resize=True)
    assert exc.value.code == "invalid_action_spec"
    plain = build_model(family, model.config.to_dict())
    plain.load_state_dict(model.state_dict(), strict=True)
