"""Stable-Baselines3 on a gymnasium 1.x vector env: a thin adapter to SB3's ``VecEnv``.

SB3 (2.x) predates gymnasium's ``VectorEnv`` and wants its own ``VecEnv`` contract: ``step`` returns
``(obs, rewards, dones, infos)`` with ``infos`` a list of per-env dicts, and a finished sub-env has already
been reset (its last observation in ``info["terminal_observation"]``, a time-limit cut flagged by
``info["TimeLimit.truncated"]``). This adapter gives any gymnasium vector env that contract:

* ``AutoresetMode.SAME_STEP`` envs already return the reset observation; the last one comes from
  ``info["final_obs"]``;
* ``AutoresetMode.NEXT_STEP`` envs are reset at once with ``reset(options={"reset_mask": done})`` (which
  also cancels their pending autoreset), and the observation the finishing step returned is the last one.

The sub-envs of a batched env share one object, so attributes and methods are the vector env's own
(``get_attr("x")`` is ``[env.x] * n``).

Needs the ``sb3`` extra of worldloom-models (``stable-baselines3``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over a gymnasium ``VectorEnv`` with next-step or same-step autoreset."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        mode = env.metadata.get("autoreset_mode")
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"SB3VecEnv needs a vector env with NEXT_STEP or SAME_STEP autoreset; got {mode!r}")
        self.env, self.mode = env, mode
        self._actions: np.ndarray | None = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]  # VecEnv.seed(s) gives env i the seed s + i: one vector env takes s
        options = self._options[0] or None
        obs, infos = self.env.reset(seed=seed, options=options)
        self.reset_infos = _info_list(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        self._actions = None
        done = np.logical_or(terminated, truncated)
        last = obs
        if done.any():
            if self.mode == AutoresetMode.SAME_STEP:
                last = infos.get("final_obs")
            else:
                reset_obs, reset_infos = self.env.reset(options={"reset_mask": done})
                last, obs = obs, reset_obs
                for j, info in enumerate(_info_list(reset_infos, self.num_envs)):
                    if done[j]:
                        self.reset_infos[j] = info
        out = _info_list({k: v for k, v in infos.items() if k not in ("final_obs", "_final_obs")}, self.num_envs)
        for i in np.flatnonzero(done):
            assert last is not None
            out[i]["terminal_observation"] = last[i]
            out[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, np.asarray(rewards, np.float32), done, out

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.env.render() if self.env.render_mode == "rgb_array" else None
        if frames is None:
            return [None] * self.num_envs
        return [np.asarray(f) for f in frames]


def _info_list(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's vector info (``{key: values, "_key": mask}``, nested for dict values) -> one dict per env."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = np.asarray(infos.get(f"_{key}", np.ones(n, bool)))
        per_env = _info_list(value, n) if isinstance(value, dict) else None
        for i in np.flatnonzero(mask):
            out[i][key] = per_env[i] if per_env is not None else value[i]
    return out
