"""LoRA adapters: saved alone as safetensors, loaded back onto the base, merged into a plain model."""

from __future__ import annotations

import json

import pytest
import torch

from worldloom.models.checkpoint import CheckpointError, check_safetensors, sha256_file
from worldloom.models.posttrain import (
    ADAPTER_FORMAT,
    LoraOptions,
    load_adapter,
    merge,
    prepare,
    resize_actions,
    resume_state,
    save_adapter,
)
from worldloom.models.world import FAMILIES, ActionSpec, build_model, load_world_checkpoint, save_world_checkpoint

FAMILY = sorted(FAMILIES)


def _train(model, kit, steps=4):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = kit.batch(model, seed=3)
    for i in range(steps):
        opt.zero_grad()
        kit.outputs(model, batch, seed=i)["loss"].backward()
        opt.step()


def _eval_out(model, kit, batch):
    model.eval()
    with torch.no_grad():
        out = kit.outputs(model, batch, seed=11)
    return out["loss"], out.get("velocity", out.get("digit_logits"))


def _base_file(tmp_path, kit, family, **kw):
    model = kit.base(family, **kw)
    path = save_world_checkpoint(tmp_path / "base.safetensors", model)
    return path, sha256_file(path)


@pytest.mark.parametrize("family", FAMILY)
def test_save_load_same_outputs_and_small_file(family, kit, tmp_path):
    base_path, sha = _base_file(tmp_path, kit, family)
    model, _ = load_world_checkpoint(base_path)
    base_out = _eval_out(model, kit, kit.batch(model, seed=4))[1]
    model.train()
    model, info = prepare(model, "lora", lora=LoraOptions(rank=4, alpha=8))
    _train(model, kit)
    batch = kit.batch(model, seed=4)
    want = _eval_out(model, kit, batch)
    assert not torch.allclose(want[1], base_out)  # the adapter changed something
    path = save_adapter(tmp_path / "adapter.safetensors", model, info, base_model="wm-base", base_sha256=sha)

    header = check_safetensors(path)  # a real safetensors file
    assert header["__metadata__"]["format"] == ADAPTER_FORMAT
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["base_model"] == "wm-base" and side["base_sha256"] == sha and side["family"] == family
    assert side["lora"]["rank"] == 4 and side["lora"]["alpha"] == 8.0
    assert side["lora"]["target_modules"] == list(info.lora_targets)
    assert all(".lora_A." in k or ".lora_B." in k for k in header if k != "__metadata__")
    assert path.stat().st_size < 0.25 * base_path.stat().st_size

    fresh, _ = load_world_checkpoint(base_path)
    got_info = load_adapter(path, fresh, base_sha256=sha)
    assert got_info.lora_targets == info.lora_targets and got_info.trainable == info.trainable
    got = _eval_out(fresh, kit, batch)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILY)
def test_merge_equals_unmerged(family, kit, tmp_path):
    model = kit.base(family)
    model, info = prepare(model, "lora", lora=LoraOptions(rank=4, alpha=12))
    _train(model, kit)
    batch = kit.batch(model, seed=4)
    want = _eval_out(model, kit, batch)
    expected = {}
    for name in info.lora_targets:
        layer = model.get_submodule(name)
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        expected[name] = (layer.base_layer.weight + b @ a * (12 / 4)).detach().clone()
        assert b.abs().sum() > 0
    assert merge(model) == len(info.lora_targets)
    for name, w in expected.items():
        layer = model.get_submodule(name)
        assert type(layer) is torch.nn.Linear
        torch.testing.assert_close(layer.weight, w, rtol=0, atol=1e-6)
    got = _eval_out(model, kit, batch)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    # a plain model again: same keys as a freshly built one, saved and reloaded like any other
    assert all(p.requires_grad for p in model.parameters())
    plain = build_model(family, model.config.to_dict())
    plain.load_state_dict(model.state_dict(), strict=True)
    path = save_world_checkpoint(tmp_path / "merged.safetensors", model)
    again, _ = load_world_checkpoint(path)
    torch.testing.assert_close(_eval_out(again, kit, batch)[1], got[1], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILY)
def test_adapter_with_new_action_encoder(family, kit, tmp_path):
    base_path, sha = _base_file(tmp_path, kit, family)
    model, _ = load_world_checkpoint(base_path)
    change = resize_actions(model, ActionSpec.continuous(5), resize=True)
    model, info = prepare(model, "lora", new_modules=change.new_modules)
    _train(model, kit)
    batch = kit.batch(model, seed=4)  # width-5 actions
    want = _eval_out(model, kit, batch)
    path = save_adapter(tmp_path / "a.safetensors", model, info, base_model="b", base_sha256=sha)
    assert any(k.startswith("actions.") for k in check_safetensors(path))

    fresh, _ = load_world_checkpoint(base_path)  # width 3
    load_adapter(path, fresh)
    assert fresh.action_spec == ActionSpec.continuous(5)
    torch.testing.assert_close(_eval_out(fresh, kit, batch)[1], want[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILY)
def test_load_refusals_leave_the_base_untouched(family, kit, tmp_path):
    base_path, sha = _base_file(tmp_path, kit, family)
    model, _ = load_world_checkpoint(base_path)
    model, info = prepare(model, "lora")
    path = save_adapter(tmp_path / "a.safetensors", model, info, base_model="b", base_sha256=sha)

    fresh, _ = load_world_checkpoint(base_path)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match="not on this base"):
        load_adapter(path, fresh, base_sha256="0" * 64)
    other = kit.build(family, d_model=64, n_head=2)
    with pytest.raises(CheckpointError, match="differs from the base"):
        load_adapter(path, other)
    wrong_family = kit.build("ar" if family == "diffusion" else "diffusion")
    with pytest.raises(CheckpointError, match="adapter, the base is"):
        load_adapter(path, wrong_family)
    # tensors that do not fit: a rank-2 file under a rank-8 sidecar
    side = json.loads(path.with_suffix(".json").read_text())
    side["lora"]["rank"] = 2
    path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_adapter(path, fresh)
    assert not any("lora" in k for k in fresh.state_dict())
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("family", FAMILY)
def test_resume_from_adapter_checkpoint(family, kit, tmp_path):
    """A killed LoRA job goes on from its adapter + optimiser state exactly as if it had not stopped."""
    base_path, sha = _base_file(tmp_path, kit, family)
    batch = kit.batch(kit.build(family), seed=3)

    def step(model, opt, i):
        opt.zero_grad()
        kit.outputs(model, batch, seed=i)["loss"].backward()
        opt.step()

    model, _ = load_world_checkpoint(base_path)
    model, info = prepare(model, "lora", lora=LoraOptions(rank=4, alpha=8))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for i in range(3):
        step(model, opt, i)
    path = save_adapter(tmp_path / "a.safetensors", model, info, base_model="b", base_sha256=sha, optimizer=opt,
                        step=3)
    step(model, opt, 3)

    again, _ = load_world_checkpoint(base_path)
    load_adapter(path, again)
    opt2 = torch.optim.AdamW([p for p in again.parameters() if p.requires_grad], lr=1e-2)
    state = resume_state(path, opt2)
    assert state.step == 3 and state.optimizer_restored
    step(again, opt2, 3)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)
