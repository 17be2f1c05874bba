"""Reinforcement learning in a world model's imagination.

``env``: :class:`WorldModelEnv`, a learned world model as a batched gymnasium ``VectorEnv`` (reset from
real context clips, rewards and terminations from the model's heads, pixels or latents). ``sb3``: an
adapter so Stable-Baselines3 trains in any gymnasium vector env (import it from ``worldloom.models.rl.sb3``;
it needs the ``sb3`` extra).
"""

from worldloom.models.rl.env import ContextClip, WorldModelEnv

__all__ = ["ContextClip", "WorldModelEnv"]
