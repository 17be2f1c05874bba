"""A learned world model as a batched Gymnasium environment: ``N`` imagined environments stepping in one
forward pass on the model's device.

    env = WorldModelEnv(model, tokenizer, [ContextClip(frames, actions), ...], num_envs=16,
                        observation="latents", max_episode_steps=200, sampling=Sampling(steps=2))
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

What one step is
    One *latent* transition: the world model continues every sub-env's window of ``context_frames``
    latent frames by one frame, conditioned on the action, through :meth:`WorldModel.rollout`; the
    reward and termination heads then score the new frame (:meth:`WorldModel.rollout_rewards`). With a
    tokenizer of temporal compression ``tc`` one imagined step stands for ``tc`` real frames (context
    actions are pooled to that rate as in training: mean for continuous, last id for discrete).
    The window slides: the oldest latent frame drops out, so every sub-env always feeds exactly
    ``context_frames`` frames (at most the model's context, :meth:`WorldModel.context_latents`) and all
    ``N`` share one batched call even when their episodes started at different times. No KV cache
    survives a step: the interface exposes none across calls, and with learned absolute frame positions
    a slid window's keys would be at the wrong positions anyway, so each step recomputes the window
    (the AR family still uses its KV cache token by token inside the step).

Reset
    Each sub-env starts from a real context: a clip drawn from ``contexts`` with the env's RNG
    (``np_random``, seeded by ``reset(seed=...)``) and a window of ``context_frames`` latent frames at a
    random offset in it. Clips are encoded once, at construction. Model sampling uses a torch generator
    seeded from the same RNG, so ``reset(seed=s)`` followed by the same actions reproduces an episode.

Observations
    ``"pixels"``: the tokenizer's decoding of the newest latent frame, ``uint8 [H, W, 3]`` (the last
    ``decode_frames`` latent frames are decoded so the causal decoder has past to lean on, and the last
    pixel frame is kept). ``"latents"``: the tokenizer's latent grid of the newest frame, ``float32
    [C, h, w]`` (:meth:`WorldModel.latent_features`: FSQ codes for token models), what an encoder of real
    frames would give a policy.

Episodes end when the termination head's probability passes ``termination_threshold`` (terminated) or
after ``max_episode_steps`` steps (truncated, as gymnasium's ``TimeLimit``: it may coincide with
terminated). Autoreset follows gymnasium 1.x: ``AutoresetMode.NEXT_STEP`` (the default; the step after
an episode ended resets that sub-env, ignores its action and returns reward 0, not done) or
``AutoresetMode.SAME_STEP`` (the step that ends an episode returns the reset observation, the last one in
``info["final_obs"]``). ``reset(options={"reset_mask": mask})`` resets only the masked sub-envs.

Why no reward function is accepted in place of a reward head: rewards and terminations must come from
the same model that imagines the frames, or a policy learns to exploit a reward computed on frames the
model never meant; a model without heads is refused at construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from torch import Tensor

from worldloom.models.tokenizer.data import frames_to_tensor, tensor_to_frames
from worldloom.models.world.base import Sampling, SamplingLimits, WorldModel
from worldloom.models.world.data import LatentSequence, Pool, pool_actions

Observation = Literal["pixels", "latents"]


@dataclass(frozen=True)
class ContextClip:
    """A real clip to start imagined episodes from: ``frames`` ``[T, H, W, 3]`` uint8 at the tokenizer's
    resolution and the per-step ``actions`` between them (``actions[i]`` leads frame ``i`` to ``i + 1``:
    ``T - 1`` rows, or ``T`` with the last unused; ``[T - 1]`` ids or ``[T - 1, D]`` floats), e.g. an
    episode of a dataset or a replay buffer. Frames past the last whole latent frame (``1 + k * tc``) are
    dropped."""

    frames: np.ndarray
    actions: np.ndarray


class WorldModelEnv(gym.vector.VectorEnv):
    """``num_envs`` imagined environments of one world model (see the module docstring)."""

    def __init__(self, model: WorldModel, tokenizer: Any, contexts: Sequence[ContextClip | LatentSequence], *,
                 num_envs: int, observation: Observation = "pixels", max_episode_steps: int = 1000,
                 context_frames: int | None = None, decode_frames: int = 2, sampling: Sampling | None = None,
                 sampling_limits: SamplingLimits | None = None, termination_threshold: float = 0.5,
                 action_low: float = -1.0, action_high: float = 1.0,
                 autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP) -> None:
        if model.reward is None:
            raise ValueError("the world model has no reward head (config reward_head=False): an imagined "
                             "environment needs the model's own rewards and terminations")
        spec = model.action_spec
        if spec is None or model.actions is None:
            raise ValueError("the world model has no action conditioning (config action=None): nothing to act on")
        model.check_tokenizer(tokenizer.config)
        if observation not in ("pixels", "latents"):
            raise ValueError(f"observation must be 'pixels' or 'latents', got {observation!r}")
        if num_envs < 1 or max_episode_steps < 1 or decode_frames < 1:
            raise ValueError("num_envs, max_episode_steps and decode_frames must be >= 1")
        if not 0.0 < termination_threshold < 1.0:
            raise ValueError(f"termination_threshold must be in (0, 1), got {termination_threshold}")
        if autoreset_mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or SAME_STEP, got {autoreset_mode}")
        if not contexts:
            raise ValueError("contexts is empty: imagined episodes start from real context clips")
        self.model, self.tokenizer, self.model_action = model, tokenizer, spec
        self.observation, self.max_episode_steps, self.decode_frames = observation, max_episode_steps, decode_frames
        self.sampling = model.resolve_sampling(sampling or Sampling(), sampling_limits or SamplingLimits())
        self.termination_threshold = termination_threshold
        self.autoreset_mode = autoreset_mode
        self.num_envs = num_envs
        self.metadata = {"autoreset_mode": autoreset_mode, "render_modes": []}
        self.device = model.device

        limit = model.context_latents(1)
        with eval_mode(model, tokenizer), torch.inference_mode():
            self._clips = [self._encode(c, i) for i, c in enumerate(contexts)]
        shortest = min(model.num_frames(x) for x, _ in self._clips)
        self.context_frames = min(limit, shortest) if context_frames is None else int(context_frames)
        if not 1 <= self.context_frames <= limit:
            raise ValueError(f"context_frames must be in [1, {limit}] (the model's context for one new frame), "
                             f"got {self.context_frames}")
        if shortest < self.context_frames:
            raise ValueError(f"a context clip has {shortest} latent frames; every clip needs at least "
                             f"context_frames={self.context_frames}")

        if spec.kind == "discrete":
            self.single_action_space: gym.Space = gym.spaces.Discrete(spec.num_actions)
        else:
            if not np.isfinite([action_low, action_high]).all() or action_low >= action_high:
                raise ValueError(f"need finite action_low < action_high, got {action_low}, {action_high}")
            self.single_action_space = gym.spaces.Box(action_low, action_high, (spec.dim,), np.float32)
        self.action_space = batch_space(self.single_action_space, num_envs)
        h, w = model.latent_grid
        if observation == "pixels":
            s = tokenizer.config.s_compression
            self.single_observation_space: gym.Space = gym.spaces.Box(0, 255, (h * s, w * s, 3), np.uint8)
        else:
            c = tokenizer.config.z_channels
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (c, h, w), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

        self._window: Tensor | None = None  # [N, ...] latent windows of context_frames frames (model layout)
        self._past: Tensor | None = None  # [N, context_frames - 1(, D)] the actions inside each window
        obs_shape = self.single_observation_space.shape or ()
        self._obs: np.ndarray = np.zeros((num_envs, *obs_shape), self.single_observation_space.dtype)
        self._steps = np.zeros(num_envs, np.int64)
        self._autoreset = np.zeros(num_envs, bool)
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------------------------- contexts

    def _encode(self, clip: ContextClip | LatentSequence, index: int) -> tuple[Tensor, Tensor]:
        """A clip -> (latents ``[1, ...]`` in the model's layout, pooled actions ``[1, T - 1(, D)]``)."""
        model, spec = self.model, self.model_action
        if isinstance(clip, LatentSequence):
            if clip.actions is None:
                raise ValueError(f"context {index} has no actions")
            latents, acts = clip.data[None].to(self.device), clip.actions[None].to(self.device)
            if model.latent_kind != clip.kind:
                raise ValueError(f"context {index} holds {clip.kind} latents; the model takes {model.latent_kind}")
        else:
            latents, acts = self._encode_frames(clip, index)
        frames = model.num_frames(latents)
        if spec.kind == "discrete":
            acts = acts.long()
            ok = acts.ndim == 2 and (not acts.numel() or (int(acts.min()) >= 0 and int(acts.max()) < spec.num_actions))
        else:
            acts = acts.float()
            ok = acts.ndim == 3 and acts.shape[-1] == spec.dim and bool(torch.isfinite(acts).all())
        if not ok or acts.shape[1] < frames - 1:
            want = f"ids in [0, {spec.num_actions})" if spec.kind == "discrete" else f"finite [T - 1, {spec.dim}]"
            raise ValueError(f"context {index}: actions must be {want}, one per latent transition; got "
                             f"{tuple(acts.shape)} for {frames} latent frames")
        return latents, acts[:, : frames - 1]

    def _encode_frames(self, clip: ContextClip, index: int) -> tuple[Tensor, Tensor]:
        cfg, spec = self.tokenizer.config, self.model_action
        frames, steps = np.asarray(clip.frames), np.asarray(clip.actions)
        h, w = self.model.latent_grid
        size = (h * cfg.s_compression, w * cfg.s_compression)
        if frames.ndim != 4 or frames.dtype != np.uint8 or tuple(frames.shape[1:]) != (*size, 3) or not len(frames):
            raise ValueError(f"context {index}: frames must be uint8 [T >= 1, {size[0]}, {size[1]}, 3]; got "
                             f"{frames.dtype} {frames.shape}")
        tc = cfg.t_compression
        usable = 1 + (len(frames) - 1) // tc * tc
        if spec.kind == "continuous" and steps.ndim == 1 and spec.dim == 1:
            steps = steps[:, None]
        want_ndim = 1 if spec.kind == "discrete" else 2
        if steps.ndim != want_ndim or len(steps) < usable - 1 or steps.dtype == object:
            raise ValueError(f"context {index}: actions must be [T - 1{']' if want_ndim == 1 else ', D]'} for "
                             f"{len(frames)} frames; got {steps.shape}")
        if spec.kind == "discrete" and not np.issubdtype(steps.dtype, np.integer):
            raise ValueError(f"context {index}: discrete actions must be integer ids, got {steps.dtype}")
        pool: Pool = "last" if spec.kind == "discrete" else "mean"
        latent_frames = 1 + (usable - 1) // tc
        pooled, _ = pool_actions(steps[: usable - 1], latent_frames, tc, 0, pool)
        video = frames_to_tensor(frames[:usable])[None].to(next(self.tokenizer.parameters()).device)
        latents = self.model.encode_video(self.tokenizer, video).to(self.device)
        return latents, torch.from_numpy(pooled)[None].to(self.device)

    # ----------------------------------------------------------------------------------- gymnasium

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env, or those of ``options["reset_mask"]`` (bool ``[num_envs]``)."""
        opts = dict(options or {})
        mask = opts.pop("reset_mask", None)
        if opts:
            raise ValueError(f"unknown reset options {sorted(opts)} (only 'reset_mask')")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,) or not mask.any():
                raise ValueError(f"reset_mask must be bool [{self.num_envs}] with at least one True")
            if self._window is None and not mask.all():
                raise ValueError("the first reset must reset every sub-env")
        super().reset(seed=seed)
        if seed is not None or self._generator is None:
            self._generator = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
        rows = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        with eval_mode(self.model, self.tokenizer), torch.inference_mode():
            self._reset_rows(rows)
        return self._obs.copy(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._window is None or self._past is None:
            raise RuntimeError("call reset() before step()")
        act = self._check_actions(actions)
        n = self.num_envs
        rewards = np.zeros(n, np.float32)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        infos: dict[str, Any] = {}
        resetting = self._autoreset if self.autoreset_mode == AutoresetMode.NEXT_STEP else np.zeros(n, bool)
        rows = np.flatnonzero(~resetting)
        with eval_mode(self.model, self.tokenizer), torch.inference_mode():
            if len(rows):
                r, d = self._advance(rows, act[torch.as_tensor(rows, device=self.device)])
                rewards[rows], terminated[rows] = r, d
                self._steps[rows] += 1
                truncated[rows] = self._steps[rows] >= self.max_episode_steps
            done = terminated | truncated
            if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
                final = np.full(n, None, dtype=object)
                for i in np.flatnonzero(done):
                    final[i] = self._obs[i].copy()
                infos = {"final_obs": final, "_final_obs": done.copy(), "final_info": {}, "_final_info": done.copy()}
                self._reset_rows(np.flatnonzero(done))
            if resetting.any():
                self._reset_rows(np.flatnonzero(resetting))
        self._autoreset = done if self.autoreset_mode == AutoresetMode.NEXT_STEP else np.zeros(n, bool)
        return self._obs.copy(), rewards, terminated, truncated, infos

    # ------------------------------------------------------------------------------------ internals

    def _check_actions(self, actions: Any) -> Tensor:
        """Batched actions -> a tensor on the model's device; anything outside the action space is refused."""
        a = np.asarray(actions)
        space = self.single_action_space
        if isinstance(space, gym.spaces.Discrete):
            if a.shape != (self.num_envs,) or not (np.issubdtype(a.dtype, np.integer) or
                                                     (np.issubdtype(a.dtype, np.floating) and
                                                      np.array_equal(a, np.round(a)))):
                raise ValueError(f"actions must be {self.num_envs} integer ids; got {a.dtype} {a.shape}")
            if a.min() < 0 or a.max() >= int(space.n):
                raise ValueError(f"action ids must lie in [0, {int(space.n)})")
            return torch.as_tensor(a.astype(np.int64), device=self.device)
        assert isinstance(space, gym.spaces.Box)
        if a.shape != (self.num_envs, *space.shape) or not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"actions must be float [{self.num_envs}, {space.shape[0]}]; got {a.dtype} {a.shape}")
        a = a.astype(np.float32)
        if not np.isfinite(a).all() or (a < space.low).any() or (a > space.high).any():
            raise ValueError(f"actions must be finite and within [{space.low.min()}, {space.high.max()}]")
        return torch.as_tensor(a, device=self.device)

    def _reset_rows(self, rows: np.ndarray) -> None:
        """Fresh contexts for ``rows``: a clip each (env RNG) and a window at a random offset in it."""
        model, cf = self.model, self.context_frames
        windows, pasts = [], []
        for _ in rows:
            latents, acts = self._clips[int(self.np_random.integers(len(self._clips)))]
            start = int(self.np_random.integers(model.num_frames(latents) - cf + 1))
            windows.append(model.take_frames(latents, start, start + cf))
            pasts.append(acts[:, start:start + cf - 1])
        window, past = torch.cat(windows), torch.cat(pasts)
        if self._window is None or self._past is None:
            self._window = window.new_zeros((self.num_envs, *window.shape[1:]))
            self._past = past.new_zeros((self.num_envs, *past.shape[1:]))
        index = torch.as_tensor(rows, device=self.device)
        self._window[index], self._past[index] = window, past
        self._obs[rows] = self._observe(window)
        self._steps[rows] = 0
        self._autoreset[rows] = False

    def _advance(self, rows: np.ndarray, action: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One imagined step of ``rows`` in one batched call; returns their rewards and terminations."""
        assert self._window is not None and self._past is not None
        model = self.model
        index = torch.as_tensor(rows, device=self.device)
        acts = torch.cat([self._past[index], action[:, None]], dim=1)  # context transitions + the new one
        out = model.rollout(self._window[index], 1, actions=acts, sampling=self.sampling, generator=self._generator)
        reward, logits = model.rollout_rewards(out, acts, None, self.context_frames)
        self._window[index] = model.take_frames(out, 1)
        self._past[index] = acts[:, 1:]
        self._obs[rows] = self._observe(out)
        done = torch.sigmoid(logits[:, -1]) > self.termination_threshold
        return reward[:, -1].cpu().numpy(), done.cpu().numpy()

    def _observe(self, latents: Tensor) -> np.ndarray:
        """The observation of the newest latent frame of each window in ``latents``."""
        model, t = self.model, self.model.num_frames(latents)
        if self.observation == "latents":
            return model.latent_features(self.tokenizer, model.take_frames(latents, t - 1)).select(2, 0).cpu().numpy()
        video = model.decode_latents(self.tokenizer, model.take_frames(latents, max(0, t - self.decode_frames)))
        return tensor_to_frames(video[:, :, -1].transpose(0, 1))  # newest pixel frame of each: [N, H, W, 3]


class eval_mode:
    """Eval mode for the model and tokenizer while the env uses them; a module in training mode goes back to
    it afterwards. Modules already in eval mode are left alone (``train()`` walks every submodule: a cost
    per step that showed in profiles)."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.modules = modules
        self.switched: list[torch.nn.Module] = []

    def __enter__(self) -> None:
        self.switched = [m for m in self.modules if m.training]
        for m in self.switched:
            m.eval()

    def __exit__(self, *exc: object) -> None:
        for m in self.switched:
            m.train()
