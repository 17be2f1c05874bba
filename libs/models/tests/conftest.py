"""Tiny world models of both families for the post-training tests (CPU, a few ms a step)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from worldloom.models.world import ActionSpec, ARConfig, ARWorldModel, DiffusionWorldModel, DiTConfig, WorldModel
from worldloom.models.world.base import training_outputs

FRAMES, GRID = 3, 4
ACTION = ActionSpec.continuous(3)


def tiny_config(family: str, *, action: ActionSpec | None = ACTION, text: bool = True,
                reward: bool = True, **over: Any) -> Any:
    common: dict[str, Any] = dict(n_layer=2, d_model=32, n_head=2, action=action, reward_head=reward,
                                  text_dim=384 if text else None, max_text_tokens=2)
    if family == "ar":
        return ARConfig(vocab_size=64, fsq_levels=(4, 4, 4), tokens_per_frame=GRID * GRID, max_frames=FRAMES,
                        **{**common, **over})
    return DiTConfig(in_channels=4, latent_size=(GRID, GRID), patch_size=1, max_frames=FRAMES, n_future=1,
                     cond_drop=0.0, **{**common, **over})


def build(family: str, seed: int = 0, **kw: Any) -> WorldModel:
    torch.manual_seed(seed)
    cfg = tiny_config(family, **kw)
    return ARWorldModel(cfg) if family == "ar" else DiffusionWorldModel(cfg)


def batch_for(model: WorldModel, seed: int = 0, b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    if model.family == "ar":
        frames = torch.randint(0, cfg.vocab_size, (b, FRAMES, GRID, GRID), generator=g)
    else:
        frames = torch.randn(b, cfg.in_channels, FRAMES, GRID, GRID, generator=g)
    out: dict[str, torch.Tensor] = {"frames": frames}
    spec = cfg.action
    if spec is not None:
        out["actions"] = (torch.randn(b, FRAMES - 1, spec.dim, generator=g) if spec.kind == "continuous"
                          else torch.randint(0, spec.num_actions, (b, FRAMES - 1), generator=g))
    if cfg.text_dim is not None:
        out["text"] = torch.randn(b, cfg.text_dim, generator=g)
    if cfg.reward_head:
        out["rewards"] = torch.randn(b, FRAMES, generator=g)
        out["terminations"] = (torch.rand(b, FRAMES, generator=g) > 0.8).float()
    return out


def outputs(model: WorldModel, batch: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic teacher-forced outputs (fixed flow-matching noise for diffusion)."""
    return training_outputs(model, batch, 1, generator=torch.Generator().manual_seed(seed))


def pretrain(model: WorldModel, steps: int = 15) -> WorldModel:
    """A few full steps on other data: a from-init DiT's zero output layer would hide the trunk from LoRA
    (no gradient reaches it), and a pretrained base is what post-training starts from anyway."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = batch_for(model, seed=99)
    for i in range(steps):
        opt.zero_grad()
        outputs(model, batch, seed=i)["loss"].backward()
        opt.step()
    return model


@pytest.fixture
def kit() -> Iterator[SimpleNamespace]:
    """The helpers above for the post-training tests (one torch thread: the machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SimpleNamespace(config=tiny_config, build=build, batch=batch_for, outputs=outputs, pretrain=pretrain,
                          base=lambda family, **kw: pretrain(build(family, **kw)))
    torch.set_num_threads(n)
