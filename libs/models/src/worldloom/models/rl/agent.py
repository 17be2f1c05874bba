"""An actor-critic that learns in imagination, in the spirit of DreamerV3's behaviour learning.

    env = WorldModelEnv(model, tokenizer, contexts, num_envs=64, observation="latents")
    agent = Agent(AgentConfig.for_spaces(env.single_observation_space, env.single_action_space))
    metrics = ImaginationTrainer(agent, env, ImaginationConfig(horizon=16)).train(200, progress=print)
    save_policy("policy.safetensors", agent)
    action = load_policy("policy.safetensors").act_on_frames(real_frames, model, tokenizer)

What one iteration is
    ``horizon`` imagined steps in all ``N`` sub-envs of a gymnasium ``VectorEnv`` (a :class:`WorldModelEnv`
    or any env with a float Box observation and Discrete / 1-D Box actions), then one critic and one actor
    step on the ``H x N`` transitions. The env keeps running across iterations (episodes longer than the
    horizon are cut by bootstrapping, not restarted), so imagination never pays a reset per iteration.

Targets
    Lambda-returns (:func:`lambda_returns`) bootstrapped by the slow critic (an EMA of the critic):
    ``R_t = r_t + gamma * c_t * ((1 - lam) * v(s_{t+1}) + lam * R_{t+1})`` with ``c_t = 0`` where the
    episode terminated; where it was truncated (time limit) the return stops at ``v`` of the final
    observation; at the horizon ``R_H = v(s_H)``.

Actor
    REINFORCE with the critic as baseline, for both action kinds as in DreamerV3 (the env is a black box:
    no gradient flows through imagined dynamics): ``-(R - v) / max(1, S) * log pi(a|s) - eta * H[pi]``.
    ``S`` (:class:`ReturnNormalizer`) is an EMA of the 95th minus the 5th percentile of the returns, so
    large returns are scaled down while small ones are not scaled up (a sparse-reward task keeps its
    signal instead of amplifying noise). Discrete policies are categorical with a 1% uniform mixture;
    continuous ones a bounded Gaussian: mean ``tanh``, std in ``[min_std, max_std]``, in the action range
    scaled to ``[-1, 1]``; samples are clipped into the Box (log-probs of the unclipped sample, the entropy
    of the Gaussian in closed form).

Observations are the tokenizer's latents, so the same policy acts on real pixels once they are encoded by
the tokenizer (:func:`encode_frames`, :meth:`Agent.act_on_frames`). Policies are safetensors checkpoints
with the :class:`AgentConfig` in their sidecar (:func:`save_policy`, :func:`load_policy`).
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor, nn

from worldloom.core.store.base import ObjectStore
from worldloom.models.checkpoint import (
    CheckpointError,
    fetch_files,
    load_weights,
    read_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from worldloom.models.rl.configuration_agent import AgentConfig, ImaginationConfig
from worldloom.models.rl.env import eval_mode
from worldloom.models.tokenizer.data import frames_to_tensor
from worldloom.models.world.base import WorldModel

FORMAT = "worldloom-policy"


# --------------------------------------------------------------------------------------------- targets


def lambda_returns(rewards: Tensor, next_values: Tensor, continues: Tensor, boundaries: Tensor, *,
                   gamma: float, lam: float) -> Tensor:
    """Lambda-returns ``[H, N]`` of ``H`` steps in ``N`` envs.

    ``rewards[t]`` is the reward of step ``t``, ``next_values[t]`` the (slow) critic's value of the
    observation it led to (the *final* observation where the episode ended), ``continues[t]`` 0 where
    step ``t`` terminated the episode, and ``boundaries[t]`` True where the episode ended at step ``t``
    (terminated or truncated): the return does not reach into the next episode there. The last step
    bootstraps from ``next_values[H - 1]``."""
    if not rewards.shape == next_values.shape == continues.shape == boundaries.shape or rewards.ndim != 2:
        raise ValueError("rewards, next_values, continues and boundaries must all be [H, N]")
    out = torch.empty_like(rewards)
    ahead = next_values[-1]
    for t in range(rewards.shape[0] - 1, -1, -1):
        ahead = torch.where(boundaries[t], next_values[t], ahead)
        out[t] = rewards[t] + gamma * continues[t] * ((1.0 - lam) * next_values[t] + lam * ahead)
        ahead = out[t]
    return out


class ReturnNormalizer:
    """DreamerV3's return scale: ``S`` = EMA of ``P_high - P_low`` of each batch of returns (the first batch
    sets it); advantages are divided by ``max(1, S)``."""

    def __init__(self, decay: float = 0.99, low: float = 5.0, high: float = 95.0) -> None:
        if not 0.0 <= decay < 1.0 or not 0.0 <= low < high <= 100.0:
            raise ValueError("need 0 <= decay < 1 and 0 <= low < high <= 100")
        self.decay, self.low, self.high = decay, low, high
        self.scale: float | None = None

    def update(self, returns: Tensor) -> float:
        """Fold a batch of returns into ``S``; returns the divisor ``max(1, S)``."""
        flat = returns.detach().float().flatten()
        if not flat.numel():
            return self.divisor
        q = torch.quantile(flat, torch.tensor([self.low / 100.0, self.high / 100.0], device=flat.device))
        spread = float(q[1] - q[0])
        self.scale = spread if self.scale is None else self.decay * self.scale + (1.0 - self.decay) * spread
        return self.divisor

    @property
    def divisor(self) -> float:
        return max(1.0, self.scale or 0.0)


# --------------------------------------------------------------------------------------------- policy


def _mlp(inputs: int, hidden: int, layers: int, outputs: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(inputs if i == 0 else hidden, hidden), nn.LayerNorm(hidden), nn.SiLU()]
    mods.append(nn.Linear(hidden, outputs))
    return nn.Sequential(*mods)


class Agent(nn.Module):
    """Actor, critic and slow critic over flattened observations of ``config.obs_shape``."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__()
        self.config = config
        features = math.prod(config.obs_shape)
        outputs = config.num_actions if config.action_kind == "discrete" else 2 * config.action_dim
        self.actor = _mlp(features, config.hidden, config.layers, outputs)
        self.critic = _mlp(features, config.hidden, config.layers, 1)
        with torch.no_grad():  # start from a uniform / centred policy and zero values
            for head in (self.actor[-1], self.critic[-1]):
                assert isinstance(head, nn.Linear)
                head.weight.mul_(0.01)
                head.bias.zero_()
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def action_space(self) -> gym.Space:
        return self.config.action_space()

    def observations(self, obs: Any) -> Tensor:
        """Batched observations ``[B, *obs_shape]`` (array or tensor) -> float32 ``[B, features]`` on the device."""
        x = torch.as_tensor(np.asarray(obs) if not isinstance(obs, Tensor) else obs, dtype=torch.float32,
                            device=self.device)
        if tuple(x.shape[1:]) != self.config.obs_shape:
            raise ValueError(f"observations must be [B, {', '.join(map(str, self.config.obs_shape))}], "
                             f"got {tuple(x.shape)}")
        return x.flatten(1)

    def value(self, x: Tensor, *, target: bool = False) -> Tensor:
        """The critic's (or slow critic's) value ``[B]`` of flattened observations."""
        return (self.target_critic if target else self.critic)(x).squeeze(-1)

    def _dist(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Discrete: (probabilities, log-probabilities) ``[B, n]``; continuous: (mean, std) ``[B, D]``."""
        out = self.actor(x)
        cfg = self.config
        if cfg.action_kind == "discrete":
            probs = (1.0 - cfg.unimix) * out.softmax(-1) + cfg.unimix / cfg.num_actions
            return probs, probs.log()
        mean, raw_std = out.chunk(2, dim=-1)
        std = cfg.min_std + (cfg.max_std - cfg.min_std) * torch.sigmoid(raw_std + 2.0)
        return torch.tanh(mean), std

    def log_prob_entropy(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probability ``[B]`` of sampled ``raw`` actions (ids, or unclipped samples in [-1, 1] units)
        and the policy's entropy ``[B]``."""
        a, b = self._dist(x)
        if self.config.action_kind == "discrete":
            return b.gather(-1, raw.long()[:, None]).squeeze(-1), -(a * b).sum(-1)
        normal = torch.distributions.Normal(a, b)
        return normal.log_prob(raw).sum(-1), normal.entropy().sum(-1)

    def sample(self, x: Tensor, *, deterministic: bool = False,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(env actions, raw actions for :meth:`log_prob_entropy`) of flattened observations. The noise comes
        from ``generator`` on its own device (a CPU generator gives the same actions on any device)."""
        a, b = self._dist(x)
        src = generator.device if generator is not None else x.device
        if self.config.action_kind == "discrete":
            if deterministic:
                ids = a.argmax(-1)
            else:
                u = torch.rand((a.shape[0], 1), generator=generator, device=src).to(a.device)
                ids = (a.cumsum(-1) < u).sum(-1).clamp_max(self.config.num_actions - 1)
            return ids, ids
        raw = a if deterministic else a + b * torch.randn(a.shape, generator=generator, device=src).to(a.device)
        return self.scale_action(raw), raw

    def scale_action(self, raw: Tensor) -> Tensor:
        """Samples in [-1, 1] units -> actions inside the Box (clipped)."""
        lo, hi = self.config.action_low, self.config.action_high
        return (lo + (raw.clamp(-1.0, 1.0) + 1.0) * (0.5 * (hi - lo))).clamp(lo, hi)  # no rounding past a bound

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool = False, generator: torch.Generator | None = None) -> np.ndarray:
        """Actions for latent observations: one ``[*obs_shape]`` -> one action, a batch ``[B, *obs_shape]``
        -> ``[B]`` ids or ``[B, D]`` floats, inside :attr:`action_space`."""
        arr = obs.detach().cpu().numpy() if isinstance(obs, Tensor) else np.asarray(obs)
        single = arr.shape == self.config.obs_shape
        actions, _ = self.sample(self.observations(arr[None] if single else arr), deterministic=deterministic,
                                 generator=generator)
        out = actions.cpu().numpy()
        out = out.astype(np.int64) if self.config.action_kind == "discrete" else out.astype(np.float32)
        return out[0] if single else out

    def act_on_frames(self, frames: np.ndarray, model: WorldModel, tokenizer: Any, deterministic: bool = False,
                      generator: torch.Generator | None = None) -> np.ndarray:
        """Actions for real pixel frames: the recent frames of one env ``[T, H, W, 3]`` (or of ``B`` envs
        ``[B, T, H, W, 3]``) are encoded by the world model's tokenizer (:func:`encode_frames`) and the
        policy acts on the newest latent frame, as it did in imagination."""
        return self.act(encode_frames(model, tokenizer, frames), deterministic=deterministic, generator=generator)


def encode_frames(model: WorldModel, tokenizer: Any, frames: np.ndarray) -> np.ndarray:
    """Real uint8 frames ``[T, H, W, 3]`` (or ``[B, T, H, W, 3]``) at the tokenizer's resolution -> the
    latent observation of the newest frame, float32 ``[C, h, w]`` (or ``[B, C, h, w]``): what a
    :class:`WorldModelEnv` with ``observation="latents"`` shows. The causal tokenizer encodes ``1 + k * tc``
    frames, so the oldest frames past that are dropped; one frame is enough (the first latent frame is a
    single frame), more give the encoder the past it saw in training."""
    arr = np.asarray(frames)
    single = arr.ndim == 4
    batch = arr[None] if single else arr
    cfg = tokenizer.config
    h, w = model.latent_grid
    size = (h * cfg.s_compression, w * cfg.s_compression)
    if batch.ndim != 5 or batch.dtype != np.uint8 or tuple(batch.shape[2:]) != (*size, 3) or not batch.shape[1]:
        raise ValueError(f"frames must be uint8 [T >= 1, {size[0]}, {size[1]}, 3] (or [B, T, ...]); got "
                         f"{arr.dtype} {arr.shape}")
    tc = cfg.t_compression
    usable = 1 + (batch.shape[1] - 1) // tc * tc
    video = torch.stack([frames_to_tensor(clip[-usable:]) for clip in batch])
    with eval_mode(model, tokenizer), torch.inference_mode():
        latents = model.encode_video(tokenizer, video.to(next(tokenizer.parameters()).device)).to(model.device)
        t = model.num_frames(latents)
        feats = model.latent_features(tokenizer, model.take_frames(latents, t - 1)).select(2, 0)
    out = feats.float().cpu().numpy()
    return out[0] if single else out


# ----------------------------------------------------------------------------------------- checkpoints


def save_policy(path: str | os.PathLike[str], agent: Agent, *, step: int = 0,
                extra: dict[str, Any] | None = None) -> Path:
    """Weights (actor, critic, slow critic) as safetensors and a sidecar with the :class:`AgentConfig`
    (atomic writes, SHA-256, no pickle: :mod:`worldloom.models.checkpoint`)."""
    return save_checkpoint(path, agent.state_dict(), format=FORMAT, config=agent.config.to_dict(),
                           meta={"action_kind": agent.config.action_kind}, step=step, extra=extra)


def load_policy(path_or_store: str | os.PathLike[str] | ObjectStore, key: str | None = None, *,
                device: str = "cpu") -> Agent:
    """A policy from a local ``.safetensors`` path, or from an object store (``key``: the weights' key; the
    sidecar next to it). Refuses pickles, a sidecar that does not match the weights, a bad config."""
    if isinstance(path_or_store, ObjectStore):
        if not key:
            raise ValueError("loading a policy from a store needs the weights' key")
        with tempfile.TemporaryDirectory(prefix="wl-policy-") as tmp:
            return load_policy(fetch_files(path_or_store, key, Path(tmp)), device=device)
    if key is not None:
        raise ValueError("key is only for loading from an object store")
    ckpt = read_checkpoint(path_or_store, format=FORMAT, device=device)
    try:
        config = AgentConfig.from_dict(ckpt.config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path_or_store}: bad agent config: {exc}") from None
    agent = Agent(config).to(device)
    load_weights(agent, ckpt)
    return agent.eval()


# -------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class IterationMetrics:
    """One imagination iteration. ``imagined_return``: mean lambda-return of its valid steps;
    ``episode_return``: mean undiscounted return of the episodes that ended in it (None when none did)."""

    iteration: int
    imagined_steps: int
    imagined_return: float
    episode_return: float | None
    episodes: int
    reward: float
    actor_loss: float
    critic_loss: float
    entropy: float
    return_scale: float
    imagined_steps_per_s: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_env(agent: Agent, env: gym.vector.VectorEnv) -> AutoresetMode:
    want = AgentConfig.for_spaces(env.single_observation_space, env.single_action_space)
    cfg = agent.config
    got = (cfg.obs_shape, cfg.action_kind, cfg.num_actions, cfg.action_dim, cfg.action_low, cfg.action_high)
    if got != (want.obs_shape, want.action_kind, want.num_actions, want.action_dim, want.action_low,
               want.action_high):
        raise ValueError(f"the agent's spaces ({cfg.obs_shape}, {cfg.action_space()}) do not match the env's "
                         f"({env.single_observation_space}, {env.single_action_space})")
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        raise ValueError(f"the env's autoreset mode must be NEXT_STEP or SAME_STEP, got {mode}")
    return AutoresetMode(mode)


class ImaginationTrainer:
    """Trains ``agent`` in ``env`` (see the module docstring); the env is reset once, with ``config.seed``."""

    def __init__(self, agent: Agent, env: gym.vector.VectorEnv, config: ImaginationConfig | None = None) -> None:
        self.agent, self.env, self.config = agent, env, config or ImaginationConfig()
        self.mode = _check_env(agent, env)
        cfg = self.config
        # one optimiser, a param group each (own learning rates), so a checkpoint carries both states
        self.optimizer = torch.optim.Adam([{"params": list(agent.actor.parameters()), "lr": cfg.actor_lr},
                                           {"params": list(agent.critic.parameters()), "lr": cfg.critic_lr}],
                                          eps=1e-5)
        self.normalizer = ReturnNormalizer(cfg.return_decay, cfg.return_low, cfg.return_high)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.iteration = 0
        self._obs: np.ndarray | None = None
        self._pending = np.zeros(env.num_envs, bool)  # NEXT_STEP: the next step of these sub-envs is a reset
        self._running = np.zeros(env.num_envs, np.float64)

    def train(self, steps: int, progress: Callable[[IterationMetrics], Any] | None = None) -> list[IterationMetrics]:
        """``steps`` iterations; ``progress`` gets each one's metrics as it ends."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        out = []
        for _ in range(steps):
            m = self.step()
            out.append(m)
            if progress is not None:
                progress(m)
        return out

    def step(self) -> IterationMetrics:
        """One iteration: imagine ``horizon`` steps in every sub-env, then update the critic and the actor."""
        start = time.perf_counter()
        batch, finished = self._imagine()
        collected = time.perf_counter() - start
        m = self._update(*batch)
        self.iteration += 1
        valid = int(batch[5].sum())
        return IterationMetrics(
            iteration=self.iteration, imagined_steps=valid, imagined_return=m["imagined_return"],
            episode_return=float(np.mean(finished)) if finished else None, episodes=len(finished),
            reward=m["reward"], actor_loss=m["actor_loss"], critic_loss=m["critic_loss"], entropy=m["entropy"],
            return_scale=self.normalizer.scale or 0.0, imagined_steps_per_s=valid / max(collected, 1e-9),
            seconds=time.perf_counter() - start)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """The policy checkpoint (:func:`save_policy`; :func:`load_policy` reads it) plus what resuming needs:
        the optimiser's state, the iteration and the return scale."""
        return save_checkpoint(path, self.agent.state_dict(), format=FORMAT, config=self.agent.config.to_dict(),
                               meta={"action_kind": self.agent.config.action_kind}, optimizer=self.optimizer,
                               step=self.iteration, extra={"return_scale": self.normalizer.scale,
                                                           "imagination": self.config.to_dict()})

    def restore(self, path: str | os.PathLike[str]) -> int:
        """Weights, optimiser state, iteration and return scale of a :meth:`save` checkpoint (the agent's
        config must be the checkpoint's); returns the iteration. The env is not part of it: imagination
        goes on from a fresh reset."""
        ckpt = read_checkpoint(path, format=FORMAT, device=str(self.agent.device))
        if AgentConfig.from_dict(ckpt.config) != self.agent.config:
            raise CheckpointError(f"{path}: the checkpoint's agent config differs from the agent's")
        if not ckpt.meta.get("optimizer"):
            raise CheckpointError(f"{path}: a policy without trainer state (saved by save_policy, not a trainer)")
        load_weights(self.agent, ckpt)
        restore_optimizer(self.optimizer, ckpt, str(self.agent.device))
        scale = ckpt.state.extra.get("return_scale")
        self.normalizer.scale = None if scale is None else float(scale)
        self.iteration = ckpt.state.step
        return self.iteration

    def _imagine(self) -> tuple[tuple[Tensor, ...], list[float]]:
        env, agent, n, horizon = self.env, self.agent, self.env.num_envs, self.config.horizon
        if self._obs is None:
            self._obs, _ = env.reset(seed=self.config.seed)
        obs, raws, rewards, terms, dones, valids, boots = [], [], [], [], [], [], []
        finished: list[float] = []
        with torch.no_grad():
            for _ in range(horizon):
                x = agent.observations(self._obs)
                action, raw = agent.sample(x, generator=self.generator)
                act = action.cpu().numpy()
                if isinstance(env.single_action_space, gym.spaces.Box):
                    act = act.astype(env.single_action_space.dtype)
                nxt, reward, term, trunc, info = env.step(act)
                valid = ~self._pending if self.mode == AutoresetMode.NEXT_STEP else np.ones(n, bool)
                done = (np.asarray(term) | np.asarray(trunc)) & valid
                boot = np.array(nxt, copy=True)
                if self.mode == AutoresetMode.SAME_STEP and done.any():
                    for i in np.flatnonzero(done):
                        boot[i] = info["final_obs"][i]
                reward = np.asarray(reward, np.float64) * valid
                self._running += reward
                for i in np.flatnonzero(done):
                    finished.append(float(self._running[i]))
                self._running[done] = 0.0
                obs.append(x)
                raws.append(raw)
                rewards.append(reward)
                terms.append(np.asarray(term) & valid)
                dones.append(done)
                valids.append(valid)
                boots.append(boot)
                self._pending = done if self.mode == AutoresetMode.NEXT_STEP else np.zeros(n, bool)
                self._obs = nxt
        dev = agent.device

        def stack(xs: list[np.ndarray], dtype: torch.dtype) -> Tensor:
            return torch.as_tensor(np.stack(xs), dtype=dtype, device=dev)

        batch = (torch.stack(obs), torch.stack(raws), stack(rewards, torch.float32), stack(terms, torch.bool),
                 stack(dones, torch.bool), stack(valids, torch.bool),
                 agent.observations(np.concatenate(boots)).view(horizon, n, -1))
        return batch, finished

    def _update(self, obs: Tensor, raw: Tensor, rewards: Tensor, terms: Tensor, dones: Tensor, valid: Tensor,
                boots: Tensor) -> dict[str, float]:
        agent, cfg = self.agent, self.config
        h, n = rewards.shape
        flat_obs, flat_raw, mask = obs.flatten(0, 1), raw.flatten(0, 1), valid.flatten().float()
        count = mask.sum().clamp_min(1.0)
        with torch.no_grad():
            next_values = agent.value(boots.flatten(0, 1), target=True).view(h, n)
            returns = lambda_returns(rewards, next_values, (~terms).float(), dones, gamma=cfg.gamma, lam=cfg.lam)
            divisor = self.normalizer.update(returns[valid])
        target = returns.flatten()

        values = agent.value(flat_obs)
        critic_loss = (0.5 * (values - target).square() * mask).sum() / count
        advantage = (target - values.detach()) / divisor  # the baseline takes no gradient from the actor
        logp, entropy = agent.log_prob_entropy(flat_obs, flat_raw)
        actor_loss = -((advantage * logp + cfg.entropy * entropy) * mask).sum() / count
        self.optimizer.zero_grad(set_to_none=True)
        (critic_loss + actor_loss).backward()  # disjoint parameters: each net gets its own loss's gradient
        nn.utils.clip_grad_norm_(agent.critic.parameters(), cfg.grad_clip)
        nn.utils.clip_grad_norm_(agent.actor.parameters(), cfg.grad_clip)
        self.optimizer.step()

        with torch.no_grad():
            for slow, fast in zip(agent.target_critic.parameters(), agent.critic.parameters(), strict=True):
                slow.lerp_(fast, cfg.target_tau)
        return {"imagined_return": float((target * mask).sum() / count),
                "reward": float((rewards.flatten() * mask).sum() / count),
                "actor_loss": float(actor_loss.detach()), "critic_loss": float(critic_loss.detach()),
                "entropy": float((entropy.detach() * mask).sum() / count)}


def evaluate(agent: Agent, env: gym.vector.VectorEnv, episodes: int, *, deterministic: bool = True,
             seed: int | None = None, max_steps: int = 1_000_000) -> list[float]:
    """Undiscounted returns of ``episodes`` whole episodes of ``agent`` in ``env`` (reset with ``seed``). Each
    sub-env contributes its first ``ceil(episodes / N)`` episodes, so short episodes are not over-counted."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    mode = _check_env(agent, env)
    n = env.num_envs
    per_env = -(-episodes // n)
    obs, _ = env.reset(seed=seed)
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    returns: list[list[float]] = [[] for _ in range(n)]
    running, pending = np.zeros(n), np.zeros(n, bool)
    steps = 0
    while not all(len(r) >= per_env for r in returns):
        if steps == max_steps:
            raise RuntimeError(f"{episodes} episodes did not end within {max_steps} steps")
        steps += 1
        act = agent.act(obs, deterministic=deterministic, generator=generator)
        if isinstance(env.single_action_space, gym.spaces.Box):
            act = act.astype(env.single_action_space.dtype)
        obs, reward, term, trunc, _ = env.step(act)
        valid = ~pending if mode == AutoresetMode.NEXT_STEP else np.ones(n, bool)
        running += np.asarray(reward, np.float64) * valid
        done = (np.asarray(term) | np.asarray(trunc)) & valid
        for i in np.flatnonzero(done):
            returns[i].append(float(running[i]))
        running[done] = 0.0
        pending = done if mode == AutoresetMode.NEXT_STEP else np.zeros(n, bool)
    flat = [r for per in returns for r in per[:per_env]]
    return flat[:episodes]
