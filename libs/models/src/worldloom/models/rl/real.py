"""The real side of RL in a world model: a simulator seen only through its pixels, the policy acting on them at
the world model's clock, and the updates that turn real episodes into a better world model.

    env = PixelObservation(gym.make("CartPole-v1", render_mode="rgb_array"), 64)
    act = FramePolicy(env.action_space, agent, model, tokenizer, action_repeat=4, seed=0)
    seq = episode_sequence(model, tokenizer, frames, actions, rewards, terminated)
    losses = update_world_model(model, optimizer, sequences, steps=50, batch=8, context_frames=3, seed=0)

Pixels only
    :class:`PixelObservation` replaces the env's observation with its ``rgb_array`` rendering, padded to a
    square with the frame's edge pixels (a centre crop would cut off e.g. a cart near the track's end) and
    resized to ``resolution``; ``render()`` returns the same frame, so a recorder stores exactly what the
    agent saw. The simulator's internal state never reaches the policy or the data it learns from.

The world model's clock
    One imagined step is one latent frame, i.e. ``t_compression`` real frames, and the context actions
    of a latent transition are pooled ("last" id, mean vector) as in training. So the agent decides once
    per ``action_repeat = t_compression`` real steps and holds its action in between (frame skip), on the
    latent of the newest latent frame of the episode so far (:func:`~.agent.encode_frames` of its last
    ``1 + 2 * tc`` frames: the episode's frame count is ``1 + k * tc`` at every decision, so latent frames
    line up with the episode's, as in imagination).

Episode tails
    An episode of ``T`` steps gives ``T + 1`` frames; a causal tokenizer encodes ``1 + k * tc`` of them,
    so the last ``T mod tc`` steps -- where a terminal transition lies -- would be dropped and the
    termination head would never see an episode end. :func:`episode_sequence` pads the tail with copies of
    the final frame and action (reward 0) up to the next whole latent frame, so the terminal latent frame
    carries the termination. Only the in-memory training sequence is padded; the stored episode is not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from worldloom.models.frames import fit_frames
from worldloom.models.rl.agent import Agent, encode_frames
from worldloom.models.tokenizer.data import frames_to_tensor
from worldloom.models.tokenizer.model import CausalVideoTokenizer
from worldloom.models.tokenizer.train import train_step
from worldloom.models.training.optim import set_lr
from worldloom.models.world.base import WorldModel, training_outputs
from worldloom.models.world.data import LatentSequence, Pool, WindowSampler, batch_seed, pool_actions


def square_frame(frame: np.ndarray, resolution: int) -> np.ndarray:
    """An RGB frame padded to a square with its edge pixels, then resized to ``resolution`` (uint8).

    Large downscales first average ``k x k`` blocks (an area filter, a few ms for a 600x400 render where the
    antialiased resize alone took tens of ms per frame: every real step pays it), then the antialiased
    bilinear resize covers the last non-integer factor."""
    h, w = frame.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.pad(frame, ((top, side - h - top), (left, side - w - left), (0, 0)), mode="edge")
    k = side // resolution
    if k >= 2:
        m = side // k * k
        off = (side - m) // 2
        x = torch.from_numpy(np.ascontiguousarray(square[off : off + m, off : off + m])).permute(2, 0, 1)[None].float()
        square = F.avg_pool2d(x, k).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return fit_frames(square[None], (resolution, resolution))[0]


class PixelObservation(gym.Wrapper):
    """Observations are the rendered frame at ``resolution`` (see the module docstring); ``frames`` holds every
    frame of the current episode (reset clears it)."""

    def __init__(self, env: gym.Env, resolution: int) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"the env must render rgb_array frames, got render_mode={env.render_mode!r}")
        self.resolution = resolution
        self.observation_space = gym.spaces.Box(0, 255, (resolution, resolution, 3), np.uint8)
        self.frames: list[np.ndarray] = []

    def _frame(self) -> np.ndarray:
        frame = self.env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{self.env} did not render an RGB frame (got {type(frame).__name__})")
        frame = frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)
        out = square_frame(frame, self.resolution)
        self.frames.append(out)
        return out

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(**kwargs)
        self.frames = []
        return self._frame(), info

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        _, reward, terminated, truncated, info = self.env.step(action)
        return self._frame(), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        """The newest observation (what a recorder stores is what the agent saw)."""
        if not self.frames:
            raise RuntimeError("render() before reset()")
        return self.frames[-1]


class FramePolicy:
    """``policy(frame) -> action`` for one real episode (a fresh instance per episode): a decision every
    ``action_repeat`` frames, held in between. Without an agent the decisions are uniform random (seeded:
    the warm-up data); with one, the agent acts on the latent of the newest latent frame (module docstring)."""

    def __init__(
        self,
        action_space: gym.Space,
        agent: Agent | None,
        model: WorldModel | None,
        tokenizer: Any,
        *,
        action_repeat: int,
        seed: int,
        deterministic: bool = False,
    ) -> None:
        if action_repeat < 1:
            raise ValueError("action_repeat must be >= 1")
        if agent is not None and (model is None or tokenizer is None):
            raise ValueError("an agent acts through the world model's tokenizer: give model and tokenizer")
        self.space, self.agent, self.model, self.tokenizer = action_space, agent, model, tokenizer
        self.repeat, self.deterministic = action_repeat, deterministic
        self.space.seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.frames: list[np.ndarray] = []
        self.action: Any = None
        self.decide_s = 0.0

    def __call__(self, observation: Any) -> Any:
        self.frames.append(observation)
        if (len(self.frames) - 1) % self.repeat == 0:
            start = time.perf_counter()
            self.action = self._decide()
            self.decide_s += time.perf_counter() - start
        return self.action

    def _decide(self) -> Any:
        if self.agent is None:
            return self.space.sample()
        assert self.model is not None
        recent = np.stack(self.frames[-(1 + 2 * self.repeat) :])
        latent = encode_frames(self.model, self.tokenizer, recent)
        action = self.agent.act(latent, deterministic=self.deterministic, generator=self.generator)
        if isinstance(self.space, gym.spaces.Discrete):
            return int(action)
        assert isinstance(self.space, gym.spaces.Box)
        return np.asarray(action, dtype=self.space.dtype).reshape(self.space.shape)


# ------------------------------------------------------------------------------------------- world model


def episode_sequence(
    model: WorldModel,
    tokenizer: Any,
    frames: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    *,
    video_id: str = "",
) -> LatentSequence | None:
    """One real episode (``T + 1`` frames at the tokenizer's resolution, ``T`` actions / rewards / flags) as a
    training sequence in the model's layout with pooled actions, per-frame rewards and terminations, the
    tail padded to a whole latent frame (module docstring). None when the episode has no step."""
    steps = len(actions)
    if steps == 0:
        return None
    if len(frames) != steps + 1 or len(rewards) != steps or len(terminated) != steps:
        raise ValueError(
            f"an episode of {steps} steps needs {steps + 1} frames and {steps} rewards and flags; got "
            f"{len(frames)}, {len(rewards)}, {len(terminated)}"
        )
    tc = tokenizer.config.t_compression
    pad = (-steps) % tc
    if pad:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        actions = np.concatenate([actions, np.repeat(actions[-1:], pad, axis=0)])
        rewards = np.concatenate([rewards, np.zeros(pad, rewards.dtype)])
        terminated = np.concatenate([terminated, np.repeat(terminated[-1:], pad)])
    latent_frames = 1 + (steps + pad) // tc
    spec = model.action_spec
    assert spec is not None
    pool: Pool = "last" if spec.kind == "discrete" else "mean"
    pooled, _ = pool_actions(
        actions if spec.kind == "discrete" else actions.reshape(len(actions), -1), latent_frames, tc, 0, pool
    )
    r, _ = pool_actions(rewards.astype(np.float32), latent_frames, tc, 0, "sum")
    d, _ = pool_actions(terminated.astype(np.float32), latent_frames, tc, 0, "max")
    device = next(tokenizer.parameters()).device
    with torch.no_grad():
        latents = model.encode_video(tokenizer, frames_to_tensor(frames)[None].to(device))[0].cpu()
    zero = np.zeros(1, np.float32)
    return LatentSequence(
        latents,
        model.latent_kind,
        actions=torch.from_numpy(pooled),
        rewards=torch.from_numpy(np.concatenate([zero, r])),
        terminations=torch.from_numpy(np.concatenate([zero, d])),
        video_id=video_id,
    )


def update_world_model(
    model: WorldModel,
    optimizer: torch.optim.Optimizer,
    sequences: Sequence[LatentSequence],
    *,
    steps: int,
    batch: int,
    window: int,
    context_frames: int,
    lr: float,
    seed: int,
    start_step: int = 0,
    grad_clip: float = 1.0,
) -> dict[str, float]:
    """``steps`` optimiser steps of the world model's training loss (frames + reward and termination heads) on
    windows of ``sequences``; returns the mean losses. ``start_step`` keeps data order and noise distinct
    across calls (the experiment passes the world model's total steps so far). Cosine decay restarts every
    call: each call trains on a bigger replay buffer."""
    sampler = WindowSampler(sequences, window, batch, seed=seed, start_step=start_step)
    sums: dict[str, float] = {}
    model.train()
    try:
        for i in range(steps):
            set_lr(optimizer, i, steps, lr)
            b = next(sampler)
            dev = model.device
            b = {k: v.to(dev) for k, v in b.items()}
            noise = torch.Generator().manual_seed(batch_seed(seed, 0, start_step + i) ^ 0xD1FF)
            out = training_outputs(model, b, context_frames, generator=noise)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            for name, value in out.items():
                if isinstance(value, Tensor) and value.ndim == 0:
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
    finally:
        model.eval()
    return {k: v / steps for k, v in sums.items() if math.isfinite(v)}


def fit_tokenizer(
    tokenizer: CausalVideoTokenizer,
    optimizer: torch.optim.Optimizer,
    episodes: Sequence[np.ndarray],
    *,
    steps: int,
    batch: int,
    clip_frames: int,
    lr: float,
    seed: int,
) -> dict[str, float]:
    """``steps`` reconstruction steps of a tokenizer on random ``clip_frames``-frame clips of real episodes
    (``[T, H, W, 3]`` uint8 each; shorter episodes give shorter clips); returns the last step's metrics."""
    if clip_frames < 1 or (clip_frames - 1) % tokenizer.config.t_compression:
        raise ValueError(f"clip_frames must be 1 + k * {tokenizer.config.t_compression}, got {clip_frames}")
    rng = np.random.default_rng(seed)
    device = next(tokenizer.parameters()).device
    metrics: dict[str, float] = {}
    tc = tokenizer.config.t_compression
    for i in range(steps):
        set_lr(optimizer, i, steps, lr)
        clips = []
        for _ in range(batch):
            ep = episodes[int(rng.integers(len(episodes)))]
            length = min(clip_frames, 1 + (len(ep) - 1) // tc * tc)
            start = int(rng.integers(len(ep) - length + 1))
            clip = ep[start : start + length]
            if length < clip_frames:  # short episode: hold its last frame (what padding does for the model)
                clip = np.concatenate([clip, np.repeat(clip[-1:], clip_frames - length, axis=0)])
            clips.append(frames_to_tensor(clip))
        metrics = train_step(tokenizer, torch.stack(clips).to(device), optimizer)
    tokenizer.eval()
    return metrics
