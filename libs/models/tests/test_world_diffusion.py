"""Diffusion (flow-matching DiT) world model: shapes, adaLN-Zero init, conditioning, classifier-free
guidance, chunked rollouts, determinism, overfitting, config/checkpoint round trips, input validation."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from worldloom.models.world import ActionSpec, DiffusionWorldModel, DiTConfig
from worldloom.models.world.diffusion import patchify, unpatchify

C, HW = 4, 4


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and intra-op threads spinning on a shared, busy CPU can
    slow a test down 20x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(seed: int = 0, randomise: bool = True, **overrides) -> DiffusionWorldModel:
    """Tiny model; ``randomise`` perturbs every weight, because adaLN-Zero makes a fresh model predict
    v = 0 whatever the input, which would make every conditioning test pass or fail trivially."""
    torch.manual_seed(seed)
    cfg = dict(in_channels=C, latent_size=(HW, HW), patch_size=1, max_frames=4, n_future=2, n_layer=2,
               d_model=64, n_head=4, action=ActionSpec.continuous(3))
    m = DiffusionWorldModel(DiTConfig(**{**cfg, **overrides}))
    if randomise:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return m.eval()


def _lat(t: int, b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, C, t, HW, HW, generator=torch.Generator().manual_seed(seed))


def _actions(t: int, b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, t, 3, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_config_presets_json_round_trip():
    cfg = DiTConfig.preset("base", latent_size=(8, 8), action=ActionSpec.continuous(7), cross_attn=True)
    assert (cfg.n_layer, cfg.d_model, cfg.tokens_per_frame, cfg.context_window) == (12, 768, 16, 3)
    again = DiTConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.latent_size == (8, 8) and again.action == ActionSpec.continuous(7)
    with pytest.raises(ValueError, match="unknown"):
        DiTConfig.from_dict({**cfg.to_dict(), "nope": 1})
    with pytest.raises(ValueError, match="patch_size"):
        DiTConfig(latent_size=(5, 4), patch_size=2)
    with pytest.raises(ValueError, match="n_future"):
        DiTConfig(max_frames=2, n_future=2)
    with pytest.raises(ValueError, match="t_sampling"):
        DiTConfig(t_sampling="cosine")


def test_patchify_round_trip():
    x = torch.randn(2, 3, 5, 8, 6)
    tok = patchify(x, 2)
    assert tok.shape == (2, 5 * 4 * 3, 12)
    assert torch.equal(unpatchify(tok, 2, 3, 5, 8, 6), x)


def test_shapes_loss_and_reward_head():
    m = _model(reward_head=True, cross_attn=True, patch_size=2)
    out = m(_lat(2), _lat(2, seed=1), _actions(3), torch.randn(2, 3, 384),
            rewards=torch.randn(2, 4), terminations=torch.zeros(2, 4), generator=_gen())
    assert out["velocity"].shape == (2, C, 2, HW, HW) and out["t"].shape == (2,)
    assert out["reward"].shape == out["termination_logits"].shape == (2, 4)
    assert torch.allclose(out["loss"], out["flow_loss"] + out["reward_loss"] + out["termination_loss"])
    assert m.predict_rewards(_lat(4))["reward"].shape == (2, 4)
    assert m.num_parameters() > 0
    fresh = _model(randomise=False)  # adaLN-Zero: a fresh model is the zero velocity field
    assert torch.count_nonzero(fresh.velocity(_lat(2), _lat(2, seed=3), 0.5, _actions(3))) == 0


def test_conditioning_changes_the_velocity():
    m = _model(cross_attn=True)
    ctx, x, a, txt = _lat(2), _lat(2, seed=5), _actions(3), torch.randn(2, 384)
    base = m.velocity(ctx, x, 0.7, a, txt)
    a2 = a.clone()
    a2[:, 2] += 1.0  # leads into the second target frame
    assert not torch.allclose(base, m.velocity(ctx, x, 0.7, a2, txt))
    assert not torch.allclose(base, m.velocity(ctx, x, 0.7, a, -txt))
    assert not torch.allclose(base, m.velocity(ctx * 0.5, x, 0.7, a, txt))
    assert not torch.allclose(base, m.velocity(ctx, x, 0.3, a, txt))


def test_frame_causal_mask_hides_later_frames():
    m = _model(frame_causal=True, reward_head=True)
    frames = _lat(4)
    later = frames.clone()
    later[:, :, 2:] += 1.0
    r1, r2 = m.predict_rewards(frames)["reward"], m.predict_rewards(later)["reward"]
    assert torch.allclose(r1[:, :2], r2[:, :2], atol=1e-6) and not torch.allclose(r1[:, 2:], r2[:, 2:])


def test_cfg_drop_removes_conditioning_in_training():
    m = _model(cond_drop=1.0).train()
    ctx, tgt = _lat(2), _lat(2, seed=1)
    l1 = m(ctx, tgt, _actions(3), torch.randn(2, 384), generator=_gen())["loss"]
    l2 = m(ctx, tgt, _actions(3, seed=9), torch.randn(2, 384), generator=_gen())["loss"]
    l0 = m(ctx, tgt, generator=_gen())["loss"]
    assert torch.allclose(l1, l2) and torch.allclose(l1, l0)


def test_sampling_is_deterministic_and_rolls_out_in_chunks():
    m = _model()
    ctx, a = _lat(2), _actions(6)
    s1 = m.sample(ctx, 5, a, steps=3, generator=_gen(1))  # chunks of 2, 2, 1
    s2 = m.sample(ctx, 5, a, steps=3, generator=_gen(1))
    s3 = m.sample(ctx, 5, a, steps=3, generator=_gen(2))
    assert s1.shape == (2, C, 7, HW, HW) and torch.equal(s1[:, :, :2], ctx)
    assert torch.equal(s1, s2) and not torch.allclose(s1, s3)
    heun = m.sample(ctx, 2, a[:, :3], steps=2, generator=_gen(1), sampler="heun")
    assert heun.shape == (2, C, 4, HW, HW) and torch.isfinite(heun).all()
    # actions drive the rollout
    assert not torch.allclose(s1, m.sample(ctx, 5, a + 1, steps=3, generator=_gen(1)))


def test_residual_model_predicts_the_change_from_the_last_context_frame():
    """A fresh model's velocity is 0, so a plain model samples the starting noise; a residual model
    samples the last context frame plus that same noise, and its loss ignores an offset shared by
    context and target (the flow only sees the change)."""
    plain, resid = _model(randomise=False), _model(randomise=False, residual=True)
    ctx, a = _lat(2), _actions(4)
    noise = plain.sample(ctx, 2, a, steps=2, generator=_gen(3))[:, :, 2:]
    moved = resid.sample(ctx, 2, a, steps=2, generator=_gen(3))[:, :, 2:]
    assert torch.allclose(moved - ctx[:, :, -1:], noise, atol=1e-6)
    target = _lat(2, seed=5)
    resid.train()
    loss = resid(ctx, target, a, generator=_gen(4))["loss"]
    assert torch.allclose(loss, resid(ctx + 3.0, target + 3.0, a, generator=_gen(4))["loss"])
    plain.train()
    assert not torch.allclose(plain(ctx, target, a, generator=_gen(4))["loss"],
                              plain(ctx + 3.0, target + 3.0, a, generator=_gen(4))["loss"])
    with pytest.raises(ValueError, match="at least one context frame"):
        resid(ctx[:, :, :0], target, a[:, :1], generator=_gen(4))


def test_classifier_free_guidance_scale_matters_only_with_conditioning():
    m = _model()
    ctx, a, txt = _lat(2), _actions(3), torch.randn(2, 384)
    one = m.sample(ctx, 2, a, txt, steps=3, cfg_scale=1.0, generator=_gen())
    three = m.sample(ctx, 2, a, txt, steps=3, cfg_scale=3.0, generator=_gen())
    assert not torch.allclose(one, three)
    plain = [m.sample(ctx, 2, steps=3, cfg_scale=s, generator=_gen()) for s in (1.0, 3.0)]
    assert torch.equal(plain[0], plain[1])


def test_loss_drops_when_overfitting_a_fixed_batch():
    m = _model(randomise=False, max_frames=3, n_future=1, cond_drop=0.0).train()
    ctx, a = _lat(2, b=4), _actions(2, b=4)
    tgt = ctx[:, :, -1:].roll(1, dims=-1)  # next frame = last context frame moved one step right
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = _gen()
    losses = []
    for _ in range(150):
        loss = m(ctx, tgt, a, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.3 * first, (first, last)


def test_checkpoint_round_trip_safetensors_json(tmp_path):
    m = _model(reward_head=True, cross_attn=True)
    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    (tmp_path / "w.json").write_text(json.dumps(m.config.to_dict()))
    again = DiffusionWorldModel(DiTConfig.from_dict(json.loads((tmp_path / "w.json").read_text())))
    again.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    args = (_lat(2), _lat(2, seed=1), 0.4, _actions(3), torch.randn(2, 384))
    assert torch.equal(m.velocity(*args), again.velocity(*args))


def test_bf16_autocast_forward_and_sample():
    m = _model(cross_attn=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(_lat(2), _lat(2, seed=1), _actions(3), torch.randn(2, 384), generator=_gen())
        s = m.sample(_lat(2), 1, _actions(2), torch.randn(2, 384), steps=2, cfg_scale=2.0, generator=_gen())
    assert torch.isfinite(out["loss"]) and s.shape == (2, C, 3, HW, HW) and s.dtype == torch.float32


def test_bad_inputs_raise_value_error():
    m = _model()
    ctx, tgt = _lat(2), _lat(2, seed=1)
    cases = [
        (lambda: m(ctx[:, :, 0], tgt), "context must be float latents"),
        (lambda: m(ctx[:, :3], tgt), "\\[B, 4, T, 4, 4\\]"),
        (lambda: m(ctx.long(), tgt), "float"),
        (lambda: m(torch.randn(2, C, 2, 8, 8), tgt), "context"),
        (lambda: m(ctx, _lat(3)), "max_frames=4"),
        (lambda: m(_lat(4), tgt), "max_frames=4"),
        (lambda: m(ctx, tgt, torch.randn(2, 3, 5)), "width 5"),
        (lambda: m(ctx, tgt, _actions(1)), "action steps"),
        (lambda: m(ctx, tgt, text=torch.randn(2, 512)), "384"),
        (lambda: m(ctx, tgt, rewards=torch.zeros(2, 4)), "reward head"),
        (lambda: m.sample(ctx, 3, _actions(2)), "action steps"),
        (lambda: m.sample(ctx, 0), "num_frames"),
        (lambda: m.sample(ctx, 1, sampler="dpm"), "sampler"),
        (lambda: m.predict_rewards(ctx), "reward head"),
        (lambda: _model(action=None)(ctx, tgt, _actions(3)), "no action conditioning"),
        (lambda: _model(text_dim=None)(ctx, tgt, text=torch.randn(2, 384)), "no text conditioning"),
        (lambda: _model(action=ActionSpec.discrete(5))(ctx, tgt, torch.full((2, 3), 7)), "\\[0, 5\\)"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()
