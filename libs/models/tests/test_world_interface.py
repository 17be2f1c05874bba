"""The world-model interface, family by family: what callers use must work the same for every family
(so nothing outside the model files needs to branch on it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from worldloom.models.checkpoint import CheckpointError
from worldloom.models.tokenizer import CausalVideoTokenizer, TokenizerConfig, save_checkpoint
from worldloom.models.world import (
    FAMILIES,
    ActionSpec,
    IncompatibleModel,
    Sampling,
    SamplingLimits,
    WorldModel,
    build_model,
    family_class,
    load_world_checkpoint,
    save_world_checkpoint,
)
from worldloom.models.world.base import training_outputs, unwrap


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tokenizer(kind: str) -> CausalVideoTokenizer:
    cfg = TokenizerConfig.preset("tiny", kind, "4x8x8").replace(channels=16)
    if kind == "discrete":
        cfg = cfg.replace(fsq_levels=(4, 4, 4))
    else:
        cfg = cfg.replace(latent_channels=4)
    torch.manual_seed(0)
    return CausalVideoTokenizer(cfg).eval()


def _model(family: str) -> tuple[WorldModel, CausalVideoTokenizer]:
    cls = family_class(family)
    tok = _tokenizer(cls.latent_kind)
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = cls.__new__(cls).encode_video(tok, video)  # layout only: encode_video uses no weights
    shape = latents.shape[1:]
    cfg = cls.config_for_data(tok.config, shape, size="tiny", action=ActionSpec.continuous(2), reward_head=True,
                              window=3, context_frames=1, horizon=2, options={})
    cfg = cfg.replace(n_layer=1, d_model=32, n_head=2)
    torch.manual_seed(0)
    return cls(cfg).eval(), tok


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains_rolls_out_and_decodes_through_the_interface(family: str) -> None:
    model, tok = _model(family)
    assert model.family == family and isinstance(model, WorldModel)
    model.check_tokenizer(tok.config)
    video = torch.rand(2, 3, 9, 32, 32) * 2 - 1  # 9 frames -> 3 latent frames at 4x temporal compression
    with torch.no_grad():
        x = model.encode_video(tok, video)
    assert model.num_frames(x) == 3 and model.latent_grid == (4, 4)
    batch = {"frames": x, "actions": torch.randn(2, 2, 2), "rewards": torch.randn(2, 3),
             "terminations": torch.zeros(2, 3)}
    model.train()
    out = training_outputs(model, batch, context_frames=1, generator=torch.Generator().manual_seed(0))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    model.eval()
    ctx = model.take_frames(x, 0, 1)
    acts = torch.randn(2, 2, 2)
    sampling = Sampling(temperature=0.0, steps=2)  # each family reads its own options
    g = torch.Generator().manual_seed(1)
    pred = model.rollout(ctx, 2, actions=acts, sampling=sampling, generator=g)
    again = model.rollout(ctx, 2, actions=acts, sampling=sampling, generator=torch.Generator().manual_seed(1))
    assert model.num_frames(pred) == 3 and torch.equal(pred, again)
    assert torch.equal(model.take_frames(pred, 0, 1), model.take_frames(ctx.to(pred.dtype), 0, 1))
    decoded = model.decode_latents(tok, pred)
    assert decoded.shape == (2, 3, 9, 32, 32) and decoded.dtype == torch.float32
    reward, logits = model.rollout_rewards(pred, acts, None, 1)
    assert reward.shape == logits.shape == (2, 2)
    assert model.context_latents(1) >= 1
    limit = model.max_new_latents
    assert limit is None or limit >= 2


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sampling_options_of_another_family_are_refused_and_own_ones_bounded(family: str) -> None:
    model, _ = _model(family)
    limits = SamplingLimits(max_temperature=2.0, max_steps=8, max_cfg_scale=3.0, default_temperature=0.7,
                            default_steps=5)
    resolved = model.resolve_sampling(Sampling(), limits)
    assert set(resolved.given()) <= set(model.sampling_options) and resolved.given()
    others = {name for cls in FAMILIES.values() for name in cls.sampling_options} - set(model.sampling_options)
    for name in others:
        with pytest.raises(ValueError, match=f"'{name}' applies to"):
            model.resolve_sampling(Sampling(**{name: 1}), limits)
    too_big = {"temperature": 3.0, "top_k": 10**6, "steps": 9, "cfg_scale": 4.0}
    for name in model.sampling_options:
        with pytest.raises(ValueError, match=name):
            model.resolve_sampling(Sampling(**{name: too_big[name]}), limits)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_checkpoints_round_trip_by_family_and_refuse_other_formats(family: str, tmp_path: Path) -> None:
    model, tok = _model(family)
    path = save_world_checkpoint(tmp_path / "m.safetensors", model, step=7)
    loaded, state = load_world_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config and state.step == 7
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    rebuilt = build_model(family, model.config.to_dict())
    assert rebuilt.config == model.config
    tok_path = save_checkpoint(tmp_path / "tok.safetensors", tok)
    with pytest.raises(CheckpointError, match="worldloom-world-model"):
        load_world_checkpoint(tok_path)  # a tokenizer is not a world model


def test_families_refuse_the_wrong_tokenizer_and_unknown_options() -> None:
    for family, cls in FAMILIES.items():
        wrong = _tokenizer("continuous" if cls.latent_kind == "discrete" else "discrete")
        shape = (4, 3, 4, 4) if cls.latent_kind == "discrete" else (3, 4, 4)
        with pytest.raises(IncompatibleModel):
            cls.config_for_data(wrong.config, shape, size="tiny", action=None, reward_head=False, window=3,
                                context_frames=1, horizon=1, options={})
        model, _ = _model(family)
        with pytest.raises(IncompatibleModel):
            model.check_tokenizer(wrong.config)
    ar = family_class("ar")
    with pytest.raises(ValueError, match="do not apply"):
        family_class("diffusion").config_for_data(_tokenizer("continuous").config, (4, 3, 4, 4), size="tiny",
                                                  action=None, reward_head=False, window=3, context_frames=1,
                                                  horizon=1, options={"ar_head": "joint"})
    joint = ar.config_for_data(_tokenizer("discrete").config, (3, 4, 4), size="tiny", action=None, reward_head=False,
                               window=3, context_frames=1, horizon=4, options={"ar_head": "joint"})
    assert joint.fsq_levels is None and joint.max_frames == 5
    with pytest.raises(ValueError, match="family must be one of"):
        family_class("gan")


def test_unwrap_finds_the_model_inside_wrappers() -> None:
    model, _ = _model("ar")
    wrapper = torch.nn.Module()
    wrapper.module = model  # what DDP looks like from outside
    assert unwrap(wrapper) is model and unwrap(model) is model
    with pytest.raises(TypeError):
        unwrap(torch.nn.Linear(2, 2))
