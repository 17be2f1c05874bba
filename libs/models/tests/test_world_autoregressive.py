"""Autoregressive world model: shapes, block-causal masking, KV cache vs full recompute, conditioning,
overfitting a moving pattern, determinism, config/checkpoint round trips and input validation."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from worldloom.models.world import SIZES, ActionSpec, ARConfig, ARWorldModel

V, HW, N = 64, 4, 16  # vocab, frame side, tokens per frame


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and intra-op threads spinning on a shared, busy CPU can
    slow a test down 20x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(seed: int = 0, **overrides) -> ARWorldModel:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, tokens_per_frame=N, max_frames=5, n_layer=2, d_model=64, n_head=4,
               action=ActionSpec.continuous(3))
    return ARWorldModel(ARConfig(**{**cfg, **overrides})).eval()


def _tokens(b: int = 2, t: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (b, t, HW, HW), generator=torch.Generator().manual_seed(seed))


def _actions(b: int = 2, t: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, t, 3, generator=torch.Generator().manual_seed(seed))


def _text(b: int = 2, seed: int = 2) -> torch.Tensor:
    return torch.randn(b, 384, generator=torch.Generator().manual_seed(seed))


def test_config_presets_json_round_trip():
    assert set(SIZES) == {"tiny", "small", "base", "large"}
    cfg = ARConfig.preset("small", action=ActionSpec.discrete(18), reward_head=True, max_frames=8)
    assert (cfg.n_layer, cfg.d_model, cfg.size, cfg.action.num_actions) == (8, 384, "small", 18)
    again = ARConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.action == ActionSpec.discrete(18)
    with pytest.raises(ValueError, match="unknown"):
        ARConfig.from_dict({**cfg.to_dict(), "nope": 1})
    with pytest.raises(ValueError, match="heads"):
        ARConfig(d_model=65, n_head=4)
    with pytest.raises(ValueError, match="size"):
        ARConfig.preset("huge")
    with pytest.raises(ValueError, match="num_actions"):
        ActionSpec("discrete")


def test_shapes_loss_and_reward_head():
    m = _model(reward_head=True)
    tok = _tokens()
    out = m(tok, _actions(), _text(), rewards=torch.randn(2, 4), terminations=torch.zeros(2, 4))
    assert out["logits"].shape == (2, 4, HW, HW, V)
    assert out["reward"].shape == out["termination_logits"].shape == (2, 4)
    expected = out["ce_loss"] + out["reward_loss"] + out["termination_loss"]
    assert torch.allclose(out["loss"], expected)
    assert abs(out["ce_loss"].item() - torch.log(torch.tensor(float(V))).item()) < 0.5  # ~uniform at init
    assert "loss" not in m(tok[:, :1])  # one frame, context_frames=1: nothing to predict
    assert m(tok, context_frames=0)["loss"].ndim == 0
    # tied embeddings: the 64k-vocab tiny preset stores the table once
    tiny, untied = ARConfig.preset("tiny"), ARConfig.preset("tiny", tie_embeddings=False)
    extra = ARWorldModel(untied).num_parameters() - ARWorldModel(tiny).num_parameters()
    assert extra == 64_000 * 128


def test_block_causal_over_time_and_raster_within_frame():
    m = _model()
    tok, a, txt = _tokens(), _actions(), _text()
    with torch.no_grad():
        base = m(tok, a, txt)["logits"]
        future = tok.clone()
        future[:, 2] = (future[:, 2] + 7) % V  # change all of frame 2
        changed = m(future, a, txt)["logits"]
        assert torch.equal(base[:, :2], changed[:, :2])  # earlier frames untouched
        assert torch.allclose(base[:, 2, 0, 0], changed[:, 2, 0, 0], atol=1e-6)  # first token: frame token
        assert not torch.allclose(base[:, 3], changed[:, 3])
        one = tok.clone()
        one[:, 2, 1, 1] = (one[:, 2, 1, 1] + 1) % V  # raster index 5 of frame 2
        c1 = m(one, a, txt)["logits"].flatten(2, 3)
        b1 = base.flatten(2, 3)
        assert torch.allclose(b1[:, 2, :6], c1[:, 2, :6], atol=1e-6)  # predictions up to and incl. token 5
        assert not torch.allclose(b1[:, 2, 6:], c1[:, 2, 6:])
        # the text prefix is visible to every position
        assert not torch.allclose(base[:, 0], m(tok, a, -txt)["logits"][:, 0])


def test_action_conditioning_changes_only_later_frames():
    m = _model()
    tok, a = _tokens(), _actions()
    with torch.no_grad():
        base = m(tok, a)["logits"]
        a2 = a.clone()
        a2[:, 1] += 1.0  # action leading from frame 1 into frame 2
        other = m(tok, a2)["logits"]
        assert torch.allclose(base[:, :2], other[:, :2], atol=1e-6)
        assert not torch.allclose(base[:, 2], other[:, 2])
        # T actions (frame-aligned, last one unused) == T-1 actions
        assert torch.allclose(m(tok, torch.cat([a, torch.randn(2, 1, 3)], 1))["logits"], base, atol=1e-6)


def test_per_embodiment_action_width_is_padding_plus_mask():
    m = _model()
    tok, a = _tokens(), _actions()
    with torch.no_grad():
        narrow = m(tok, a[..., :2])["logits"]
        padded = torch.cat([a[..., :2], torch.zeros(2, 3, 1)], -1)
        masked = m(tok, padded, action_mask=torch.tensor([[True, True, False]] * 2))["logits"]
        assert torch.allclose(narrow, masked, atol=1e-6)
        # a zero in a real dimension is not the same as a missing dimension
        assert not torch.allclose(narrow, m(tok, padded)["logits"])


def test_kv_cache_matches_full_recompute():
    m = _model(max_text_tokens=2)
    ctx, a, txt = _tokens(t=2), _actions(t=4), torch.randn(2, 2, 384)
    for kwargs in (dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.8, top_k=5)):
        runs = [m.generate(ctx, 3, a, txt, generator=torch.Generator().manual_seed(7), use_kv_cache=c, **kwargs)
                for c in (True, False)]
        assert torch.equal(runs[0], runs[1]), kwargs
        assert runs[0].shape == (2, 5, HW, HW) and torch.equal(runs[0][:, :2], ctx)
    # from scratch (no context frame), text only
    scratch = [m.generate(ctx[:, :0], 2, text=txt, generator=torch.Generator().manual_seed(1), use_kv_cache=c)
               for c in (True, False)]
    assert torch.equal(*scratch)


def test_greedy_generation_is_deterministic_and_matches_teacher_forcing():
    m = _model()
    ctx, a = _tokens(t=1), _actions(t=3)
    g1 = m.generate(ctx, 3, a, temperature=0.0)
    assert torch.equal(g1, m.generate(ctx, 3, a, temperature=0.0))
    with torch.no_grad():
        pred = m(g1, a)["logits"].argmax(-1)
    assert torch.equal(pred[:, 1:], g1[:, 1:])


@pytest.mark.parametrize("levels", [None, (4, 4, 4)])
def test_copy_bias_starts_from_the_previous_frame_and_matches_teacher_forcing(levels):
    """A fresh copy-bias model's greedy rollout repeats the last context frame (its own logits are near
    zero, the gain is not); teacher forcing applies the same bias as generation, with and without the
    KV cache; frame 0 gets no bias; the gain is a trained parameter."""
    m = _model(copy_prev=True, fsq_levels=levels)
    plain = _model(fsq_levels=levels)
    ctx, a = _tokens(t=2), _actions(t=4)
    g = m.generate(ctx, 3, a, temperature=0.0)
    assert all(torch.equal(g[:, t], ctx[:, -1]) for t in (2, 3, 4))
    assert not torch.equal(plain.generate(ctx, 3, a, temperature=0.0)[:, 2], ctx[:, -1])
    assert torch.equal(m.generate(ctx, 3, a, temperature=1.0, generator=torch.Generator().manual_seed(3)),
                       m.generate(ctx, 3, a, temperature=1.0, generator=torch.Generator().manual_seed(3),
                                  use_kv_cache=False))
    key = "digit_logits" if levels else "logits"
    with torch.no_grad():
        biased, unbiased = m(g, a)[key], plain(g, a)[key]
        pred = biased.argmax(-1) if levels is None else None
    if pred is not None:
        assert torch.equal(pred[:, 2:], g[:, 2:])
    m.train()
    loss = m(_tokens(t=3), _actions(t=2), context_frames=1)["loss"]
    loss.backward()
    assert m.copy_gain is not None and m.copy_gain.grad is not None and bool(m.copy_gain.grad.abs().sum() > 0)
    assert torch.allclose(biased[:, 0], unbiased[:, 0]) and not torch.allclose(biased[:, 1:], unbiased[:, 1:])
    cfg = ARConfig.from_dict(json.loads(json.dumps(m.config.to_dict())))
    assert cfg.copy_prev and not ARConfig.from_dict({**cfg.to_dict(), "copy_prev": False}).copy_prev


def test_seeded_sampling_is_reproducible():
    m = _model()
    ctx = _tokens(t=1)
    s1 = m.generate(ctx, 2, generator=torch.Generator().manual_seed(3))
    s2 = m.generate(ctx, 2, generator=torch.Generator().manual_seed(3))
    s3 = m.generate(ctx, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    assert int(s1.min()) >= 0 and int(s1.max()) < V and s1.dtype == torch.int64


def _shifting_frames(b: int = 4, frames: int = 4, seed: int = 0) -> torch.Tensor:
    """Random first frames whose content moves one raster step per frame (wrapping around)."""
    f0 = torch.randint(0, 8, (b, N), generator=torch.Generator().manual_seed(seed))
    return torch.stack([f0.roll(t, dims=1) for t in range(frames)], dim=1).view(b, frames, HW, HW)


def test_overfits_a_moving_pattern_and_rolls_it_out():
    m = _model(vocab_size=8, action=None, text_dim=None).train()
    tok = _shifting_frames()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = m(tok)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    rollout = m.generate(tok[:, :1], 3, temperature=0.0)  # the motion is learned, not just the marginals
    assert torch.equal(rollout, tok)


def test_checkpoint_round_trip_safetensors_json(tmp_path):
    m = _model(reward_head=True)
    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    (tmp_path / "w.json").write_text(json.dumps(m.config.to_dict()))
    again = ARWorldModel(ARConfig.from_dict(json.loads((tmp_path / "w.json").read_text())))
    again.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    tok = _tokens()
    with torch.no_grad():
        assert torch.equal(m(tok)["logits"], again.eval()(tok)["logits"])


def test_bf16_autocast_forward_and_generate():
    m = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(_tokens(), _actions(), _text())
        gen = m.generate(_tokens(t=1), 1, _actions(t=1), _text(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and gen.shape == (2, 2, HW, HW)


def test_bad_inputs_raise_value_error():
    m = _model()
    tok = _tokens()
    cases = [
        (lambda: m(tok[0]), "integer \\[B, T, h, w\\]"),
        (lambda: m(tok.float()), "integer"),
        (lambda: m(tok[:, :, :2]), "tokens_per_frame=16"),
        (lambda: m(_tokens(t=6)), "max_frames=5"),
        (lambda: m(tok + V), "vocab_size=64"),
        (lambda: m(tok - 1), "vocab_size"),
        (lambda: m(tok, torch.randn(2, 3, 4)), "width 4"),
        (lambda: m(tok, torch.randn(2, 1, 3)), "action steps"),
        (lambda: m(tok, torch.randint(0, 3, (2, 3))), "continuous actions"),
        (lambda: m(tok, _actions(b=3)), "batch"),
        (lambda: m(tok, text=torch.randn(2, 100)), "384"),
        (lambda: m(tok, text=torch.randn(2, 9, 384)), "max_text_tokens"),
        (lambda: m(tok, context_frames=9), "context_frames"),
        (lambda: m(tok, rewards=torch.zeros(2, 4)), "reward head"),
        (lambda: m.generate(tok, 2), "max_frames=5"),
        (lambda: m.generate(tok[:, :1], 0), "num_frames"),
        (lambda: m.generate(tok[:, :1], 2, _actions(t=1)), "action steps"),
        (lambda: m.generate(tok[:, :1], 2, temperature=-1.0), "temperature"),
        (lambda: _model(action=None)(tok, _actions()), "no action conditioning"),
        (lambda: _model(action=ActionSpec.discrete(4))(tok, torch.full((2, 3), 4)), "\\[0, 4\\)"),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg):
            fn()


LEVELS = (4, 4, 4)  # prod == V: the factorised (per-FSQ-digit) embedding and head


def test_factorised_fsq_head_matches_the_tokenizer_digits_and_samples_like_the_joint_head():
    from worldloom.models.tokenizer.model import FSQ

    m = _model(fsq_levels=LEVELS)
    ids = torch.arange(V)
    fsq = FSQ(LEVELS)
    assert torch.equal(m.wte.compose(m.wte.digits(ids)), ids)
    # digit i of an id is the tokenizer's FSQ level index i: the same codes in the same order
    codes = fsq.indices_to_codes(ids.view(1, V, 1, 1)).squeeze(-1).squeeze(-1)[0].T  # [V, 3]
    digits = m.wte.digits(ids)
    for i in range(len(LEVELS)):  # the digit is the rank of the code value along that dimension
        assert torch.equal(torch.unique(codes[:, i], return_inverse=True)[1], digits[:, i])
    tok = _tokens()
    out = m(tok, _actions(), _text())
    assert out["digit_logits"].shape == (2, 4, HW, HW, sum(LEVELS)) and "logits" not in out
    assert abs(out["loss"].item() - torch.log(torch.tensor(float(V))).item()) < 0.5  # sum of digit NLLs
    ctx, a = _tokens(t=2), _actions(t=4)
    for kwargs in (dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.8, top_k=2)):
        runs = [m.generate(ctx, 3, a, generator=torch.Generator().manual_seed(7), use_kv_cache=c, **kwargs)
                for c in (True, False)]
        assert torch.equal(runs[0], runs[1]), kwargs
        assert int(runs[0].max()) < V and torch.equal(runs[0][:, :2], ctx)
    with pytest.raises(ValueError, match="product"):
        ARConfig(vocab_size=V, fsq_levels=(4, 4))
    cfg = ARConfig.from_dict(json.loads(json.dumps(m.config.to_dict())))
    assert cfg.fsq_levels == LEVELS and cfg == m.config


def test_factorised_head_overfits_a_moving_pattern():
    torch.manual_seed(0)
    m = _model(vocab_size=8, fsq_levels=(2, 2, 2), action=None, text_dim=None).train()
    tok = _shifting_frames()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = m(tok)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.05 * first
    assert torch.equal(m.generate(tok[:, :1], 3, temperature=0.0), tok)


def test_top_k_of_a_factorised_head_keeps_the_k_most_likely_whole_codes():
    """top_k=k samples only among the k most likely *codes* (joint over the digits), for any k: a
    per-digit top-k would keep every code once k reaches the largest level (4 here)."""
    m = _model(fsq_levels=LEVELS)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, sum(LEVELS), generator=g) * 2
    parts = logits.split(LEVELS, -1)
    joint = sum(torch.log_softmax(p, -1)[:, m.wte.digits(torch.arange(V))[:, i]] for i, p in enumerate(parts))
    for k in (1, 5, 8, 20):
        allowed = torch.topk(joint, k, dim=-1).indices
        seen = torch.stack([m._sample(logits, 1.0, k, torch.Generator().manual_seed(s)) for s in range(200)], 1)
        for row in range(2):
            assert set(seen[row].tolist()) <= set(allowed[row].tolist()), k
        if k > 1:
            assert all(len(set(seen[row].tolist())) > 1 for row in range(2))  # still a distribution
    greedy = m._sample(logits, 0.0, None, None)
    assert torch.equal(m._sample(logits, 1.0, 1, g), greedy)  # top-1 is the argmax code
    assert torch.equal(greedy, joint.argmax(-1))
    assert torch.allclose(m._joint_log_probs(parts), joint, atol=1e-5)  # code id order = the tokenizer's
