"""Configs of the imagination agent: :class:`AgentConfig` (what rebuilds a policy: spaces and networks, saved
in its checkpoint) and :class:`ImaginationConfig` (how it learns in imagination: horizon, returns, losses).

Defaults follow DreamerV3 where they carry over to a model-free actor-critic on an imagined vector env
(lambda 0.95, entropy 3e-4, return scale from the 5th-95th percentile range with EMA 0.99, 1% uniform
mixture on categorical policies, slow critic by EMA); learning rates are larger because the networks are small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from worldloom.models.world.common import DictConfig

ActionKind = Literal["discrete", "continuous"]


@dataclass(frozen=True)
class AgentConfig(DictConfig):
    """Everything needed to rebuild an :class:`~.agent.Agent`; round-trips through JSON.

    ``obs_shape`` is one observation's shape (the tokenizer's latent grid ``[C, h, w]`` in a
    ``WorldModelEnv(observation="latents")``); it is flattened into an MLP with LayerNorm and SiLU.
    Discrete actions are ids in ``[0, num_actions)``; continuous ones vectors of ``action_dim`` values in
    ``[action_low, action_high]`` (a Box, one bound for all dimensions)."""

    obs_shape: tuple[int, ...] = (1,)
    action_kind: ActionKind = "discrete"
    num_actions: int = 0
    action_dim: int = 0
    action_low: float = -1.0
    action_high: float = 1.0
    hidden: int = 256
    layers: int = 2
    #: share of a uniform distribution mixed into categorical policies (keeps every action's log-prob finite)
    unimix: float = 0.01
    #: bounds of the continuous policy's standard deviation (in the action range scaled to [-1, 1])
    min_std: float = 0.1
    max_std: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "obs_shape", tuple(int(d) for d in self.obs_shape))
        if not self.obs_shape or min(self.obs_shape) < 1:
            raise ValueError(f"obs_shape must be non-empty with positive sizes, got {self.obs_shape}")
        if self.action_kind == "discrete":
            if self.num_actions < 2:
                raise ValueError(f"a discrete agent needs num_actions >= 2, got {self.num_actions}")
        elif self.action_kind == "continuous":
            if self.action_dim < 1:
                raise ValueError(f"a continuous agent needs action_dim >= 1, got {self.action_dim}")
            if not (math.isfinite(self.action_low) and math.isfinite(self.action_high)
                    and self.action_low < self.action_high):
                raise ValueError(f"need finite action_low < action_high, got {self.action_low}, {self.action_high}")
        else:
            raise ValueError(f"action_kind must be 'discrete' or 'continuous', got {self.action_kind!r}")
        if self.hidden < 1 or self.layers < 1:
            raise ValueError("hidden and layers must be >= 1")
        if not 0.0 <= self.unimix < 1.0:
            raise ValueError(f"unimix must be in [0, 1), got {self.unimix}")
        if not 0.0 < self.min_std <= self.max_std:
            raise ValueError(f"need 0 < min_std <= max_std, got {self.min_std}, {self.max_std}")

    @classmethod
    def for_spaces(cls, observation_space: gym.Space, action_space: gym.Space, **overrides: Any) -> AgentConfig:
        """The config for an env's single observation and action spaces; a space the agent cannot act in
        (not a float Box / not Discrete or a bounded 1-D Box) is a ValueError that says why."""
        if not isinstance(observation_space, gym.spaces.Box) or not np.issubdtype(observation_space.dtype, np.floating):
            raise ValueError(f"the agent acts on float Box observations (a WorldModelEnv with observation='latents'), "
                             f"got {observation_space}")
        spaces: dict[str, Any] = {"obs_shape": observation_space.shape}
        if isinstance(action_space, gym.spaces.Discrete):
            if int(action_space.start) != 0:
                raise ValueError(f"discrete actions must start at 0, got start={action_space.start}")
            spaces |= {"action_kind": "discrete", "num_actions": int(action_space.n)}
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            low, high = np.unique(action_space.low), np.unique(action_space.high)
            if len(low) != 1 or len(high) != 1:
                raise ValueError(f"a Box action space needs one bound for all dimensions, got {action_space}")
            spaces |= {"action_kind": "continuous", "action_dim": int(action_space.shape[0]),
                       "action_low": float(low[0]), "action_high": float(high[0])}
        else:
            raise ValueError(f"the agent handles Discrete or 1-D Box actions, got {action_space}")
        return cls(**spaces, **overrides)

    def action_space(self) -> gym.Space:
        if self.action_kind == "discrete":
            return gym.spaces.Discrete(self.num_actions)
        return gym.spaces.Box(self.action_low, self.action_high, (self.action_dim,), np.float32)


@dataclass(frozen=True)
class ImaginationConfig(DictConfig):
    """How :class:`~.agent.ImaginationTrainer` learns: one iteration imagines ``horizon`` steps in every
    sub-env of the vector env, then takes one actor and one critic step on them."""

    horizon: int = 16
    gamma: float = 0.99
    #: lambda of the lambda-returns (0: one-step TD targets, 1: Monte-Carlo returns bootstrapped at the horizon)
    lam: float = 0.95
    #: weight of the policy's entropy in the actor loss
    entropy: float = 3e-4
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    grad_clip: float = 10.0
    #: EMA decay of the return scale S (the 95th minus the 5th percentile of the lambda-returns)
    return_decay: float = 0.99
    return_low: float = 5.0
    return_high: float = 95.0
    #: the slow (target) critic moves this share toward the critic after every update; it gives the
    #: bootstrap values of the lambda-returns
    target_tau: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        if self.entropy < 0 or self.actor_lr <= 0 or self.critic_lr <= 0 or self.grad_clip <= 0:
            raise ValueError("entropy must be >= 0; actor_lr, critic_lr and grad_clip > 0")
        if not 0.0 <= self.return_decay < 1.0:
            raise ValueError(f"return_decay must be in [0, 1), got {self.return_decay}")
        if not 0.0 <= self.return_low < self.return_high <= 100.0:
            raise ValueError(f"need 0 <= return_low < return_high <= 100, got {self.return_low}, {self.return_high}")
        if not 0.0 < self.target_tau <= 1.0:
            raise ValueError(f"target_tau must be in (0, 1], got {self.target_tau}")
