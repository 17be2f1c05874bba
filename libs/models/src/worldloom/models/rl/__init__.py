"""Reinforcement learning in a world model's imagination.

``env``: :class:`WorldModelEnv`, a learned world model as a batched gymnasium ``VectorEnv`` (reset from
real context clips, rewards and terminations from the model's heads, pixels or latents). ``sb3``: an
adapter so Stable-Baselines3 trains in any gymnasium vector env (import it from ``worldloom.models.rl.sb3``;
it needs the ``sb3`` extra). ``agent``: the built-in actor-critic that learns in imagination
(:class:`Agent`, :class:`ImaginationTrainer`, lambda-returns, return normalisation) and acts on the
tokenizer's latents of real frames; ``configuration_agent``: its configs.
"""

from worldloom.models.rl.agent import (
    Agent,
    ImaginationTrainer,
    IterationMetrics,
    ReturnNormalizer,
    encode_frames,
    evaluate,
    lambda_returns,
    load_policy,
    save_policy,
)
from worldloom.models.rl.configuration_agent import AgentConfig, ImaginationConfig
from worldloom.models.rl.env import ContextClip, WorldModelEnv

__all__ = ["Agent", "AgentConfig", "ContextClip", "ImaginationConfig", "ImaginationTrainer", "IterationMetrics",
           "ReturnNormalizer", "WorldModelEnv", "encode_frames", "evaluate", "lambda_returns", "load_policy",
           "save_policy"]
