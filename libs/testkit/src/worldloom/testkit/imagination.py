"""Tiny world models awake enough to imagine with, and :class:`WorldModelEnv` over them, for the RL tests.

    env = tiny_env("ar", "discrete", observation="latents", num_envs=4)

Random weights, but the zero-initialised layers (adaLN-Zero) are woken up and the action embeddings are as
large as the frames', so the model reacts to its context and actions from the start, as a trained one does.
Frames are 32x32 (4x8x8 tokenizers: 4x4 latents, 4 video frames per latent frame).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from worldloom.models.rl import ContextClip, WorldModelEnv
from worldloom.models.tokenizer import CausalVideoTokenizer, TokenizerConfig
from worldloom.models.tokenizer.model import Kind
from worldloom.models.world import ActionSpec, Sampling, WorldModel, family_class


def tiny_tokenizer(kind: Kind) -> CausalVideoTokenizer:
    """A 4x8x8 tokenizer: FSQ (4, 4, 4) for ``discrete``, 4 latent channels for ``continuous``."""
    cfg = TokenizerConfig.preset("tiny", kind, "4x8x8").replace(channels=16)
    cfg = cfg.replace(fsq_levels=(4, 4, 4)) if kind == "discrete" else cfg.replace(latent_channels=4)
    torch.manual_seed(0)
    return CausalVideoTokenizer(cfg).eval()


def imagination_model(family: str, action: ActionSpec | None, *, size: int = 32, reward_head: bool = True,
                      window: int = 4) -> tuple[WorldModel, CausalVideoTokenizer]:
    """A one-layer model of ``family`` and its tokenizer (see the module docstring)."""
    cls = family_class(family)
    tok = tiny_tokenizer(cls.latent_kind)
    shape = cls.__new__(cls).encode_video(tok, torch.zeros(1, 3, 9, size, size)).shape[1:]
    cfg = cls.config_for_data(tok.config, shape, size="tiny", action=action, reward_head=reward_head,
                              window=window, context_frames=window - 1, horizon=1, options={})
    torch.manual_seed(0)
    model = cls(cfg.replace(n_layer=1, d_model=32, n_head=2))
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.2)
        for p in model.actions.parameters() if model.actions is not None else ():
            p.normal_(0.0, 1.0)  # actions weigh in as much as the frames do
    return model.eval(), tok


def action_spec(kind: str) -> ActionSpec:
    """Three discrete actions, or two-dimensional continuous ones."""
    return ActionSpec.discrete(3) if kind == "discrete" else ActionSpec.continuous(2)


def context_clips(kind: str, n: int = 3, frames: int = 13, size: int = 32, seed: int = 0) -> list[ContextClip]:
    """``n`` random-noise clips with random actions of :func:`action_spec`'s kind."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pix = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
        acts = rng.integers(0, 3, frames - 1) if kind == "discrete" else rng.uniform(-1, 1, (frames - 1, 2))
        out.append(ContextClip(pix, acts))
    return out


def tiny_env(family: str, kind: str, observation: str = "latents", num_envs: int = 4, **kw: Any) -> WorldModelEnv:
    """A :class:`WorldModelEnv` over :func:`imagination_model` (two-step diffusion sampling)."""
    model, tok = imagination_model(family, action_spec(kind))
    return WorldModelEnv(model, tok, context_clips(kind), num_envs=num_envs, observation=observation,  # type: ignore[arg-type]
                         sampling=Sampling(steps=2) if family == "diffusion" else None, **kw)
