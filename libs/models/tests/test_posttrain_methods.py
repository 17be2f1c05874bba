"""Post-training methods on both families: what trains, what stays frozen, refusals, one training run each."""

from __future__ import annotations

import pytest
import torch

from worldloom.models.posttrain import LoraOptions, PosttrainError, prepare, resize_actions
from worldloom.models.world import FAMILIES, ActionSpec

FAMILY = sorted(FAMILIES)


def _grads_only_where_trainable(model, kit) -> None:
    model.zero_grad(set_to_none=True)
    kit.outputs(model, kit.batch(model, seed=1))["loss"].backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"frozen {name} got a gradient"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("family", FAMILY)
def test_trainable_counts_and_frozen_grads(family, kit):
    # no text conditioner: its 384-wide projection alone outweighs a rank-4 adapter on a 32-wide model
    infos = {}
    for method in ("full", "lora", "heads"):
        model = kit.base(family, text=False)
        total = model.num_parameters()
        opts = LoraOptions(rank=4, alpha=8) if method == "lora" else None
        model, info = prepare(model, method, lora=opts)
        assert info.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert info.total == sum(p.numel() for p in model.parameters())
        if method != "lora":
            assert info.total == total
        _grads_only_where_trainable(model, kit)
        infos[method] = info
    full, lora, heads = infos["full"], infos["lora"], infos["heads"]
    assert heads.trainable < lora.trainable < full.trainable == full.total
    assert set(heads.trainable_modules) == {"actions", "reward"}
    model = kit.build(family, text=False)
    assert lora.lora_targets == model.lora_targets() and lora.lora_targets
    # LoRA: exactly the adapter matrices train: r * (in + out) per targeted Linear
    expected = sum(4 * (m.in_features + m.out_features) for n, m in model.named_modules() if n in lora.lora_targets)
    assert lora.trainable == expected
    assert lora.total == full.total + expected


@pytest.mark.parametrize("family", FAMILY)
def test_new_modules_train_whole_under_lora_and_heads(family, kit):
    for method in ("lora", "heads"):
        model = kit.base(family, reward=False, text=False)
        change = resize_actions(model, ActionSpec.continuous(5), resize=True)
        model, info = prepare(model, method, new_modules=change.new_modules)
        assert all(p.requires_grad for p in model.actions.parameters())
        assert "actions" in info.trainable_modules
        _grads_only_where_trainable(model, kit)


@pytest.mark.parametrize("family", FAMILY)
def test_lora_target_resolution(family, kit):
    model = kit.build(family)
    _, info = prepare(model, "lora", lora=LoraOptions(rank=2, target_modules=("attn.qkv",)))
    assert info.lora_targets == tuple(f"blocks.{i}.attn.qkv" for i in range(2))
    assert info.trainable == 2 * 2 * (32 + 96)


@pytest.mark.parametrize("family", FAMILY)
def test_refusals(family, kit):
    def code(method="lora", **kw):
        with pytest.raises(PosttrainError) as exc:
            prepare(kit.build(family), method, **kw)
        return exc.value.code

    assert code(lora=LoraOptions(target_modules=("attn.nope",))) == "unknown_target_module"
    assert code(lora=LoraOptions(target_modules=("norm1",))) == "no_linear_layers"  # RMSNorm
    assert code(lora=LoraOptions(target_modules=("proj",))) == "no_linear_layers"  # also actions.proj (Sequential)
    assert code(lora=LoraOptions(target_modules=("actions.proj.0",)), new_modules=("actions",)) == "target_in_new_module"
    assert code("sgd") == "unknown_method"
    assert code("full", lora=LoraOptions()) == "invalid_lora_options"
    assert code("heads", new_modules=("nope",)) == "unknown_module"
    with pytest.raises(PosttrainError) as exc:
        LoraOptions(rank=0)
    assert exc.value.code == "invalid_lora_options"
    # a family that names no Linear layers for LoRA
    model = kit.build(family)
    model.lora_targets = lambda: ()  # type: ignore[method-assign]
    with pytest.raises(PosttrainError) as exc:
        prepare(model, "lora")
    assert exc.value.code == "no_linear_layers"
    # heads on a model with neither conditioning nor heads
    with pytest.raises(PosttrainError) as exc:
        prepare(kit.build(family, action=None, text=False, reward=False), "heads")
    assert exc.value.code == "no_heads"
    # twice
    model, _ = prepare(kit.build(family), "lora")
    with pytest.raises(PosttrainError) as exc:
        prepare(model, "heads")
    assert exc.value.code == "already_prepared"


@pytest.mark.parametrize("family", FAMILY)
@pytest.mark.parametrize("method", ["full", "lora", "heads"])
def test_training_step_lowers_loss(family, method, kit):
    model = kit.base(family)
    model, _ = prepare(model, method, lora=LoraOptions(rank=4, alpha=8) if method == "lora" else None)
    batch = kit.batch(model, seed=5)
    before = kit.outputs(model, batch, seed=7)["loss"].item()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2 if method == "lora" else 3e-3)
    for _ in range(8):
        opt.zero_grad()
        kit.outputs(model, batch, seed=7)["loss"].backward()
        opt.step()
    after = kit.outputs(model, batch, seed=7)["loss"].item()
    assert after < 0.95 * before, (before, after)
