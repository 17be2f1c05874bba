"""Scripted arm controllers ("scripted[:<noise>]"): purposeful motion for MuJoCo Reacher-v5 and Pusher-v5.

A random policy makes an arm twitch in place; a world model pretrained on that never sees the arm
travel to something and push it, which is what robot episodes (Bridge) are made of. These
controllers read only the observation vector (joint angles and velocities, fingertip, object and
goal positions) and the arm's kinematics from the env's own default MJCF (the robot a controller is
written for; requests cannot name model files, so the default is what the env runs). Actions are
torques clipped to the action box.

- Reacher-v5: the fingertip goes to the target (obs[8:10] is fingertip - target).
- Pusher-v5: the palm goes behind the object (on the side away from the goal), then pushes through
  it towards the goal, and goes behind it again when it slips away. It reaches the object; it
  moves it only a little (objects near the arm's base are at the edge of its reach).

`noise` (default 0) adds seeded Gaussian noise of that fraction of each action's half-range, so a
corpus can mix purposeful and exploratory motion. Only the stored pixels, actions and rewards are
what consumers see; the observation is the controller's input only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces

from worldloom.video.ingest import IngestError

if TYPE_CHECKING:
    from worldloom.sim.policies import Policy

# observation -> unclipped action
Controller = Callable[[np.ndarray], np.ndarray]


def scripted_envs() -> list[str]:
    return sorted(_SCRIPTS)


def check_noise(arg: str | None) -> float:
    """The noise fraction of "scripted:<noise>": a number in [0, 1]."""
    if arg is None:
        return 0.0
    try:
        noise = float(arg)
    except ValueError:
        noise = math.nan
    if not 0.0 <= noise <= 1.0:
        raise IngestError(
            422,
            "invalid_policy",
            f"scripted:{arg} — the noise must be a number in 0..1 (a fraction of each action's half-range)",
        )
    return noise


def check_env(env_id: str | None) -> None:
    if env_id is not None and env_id not in _SCRIPTS:
        raise IngestError(
            422,
            "invalid_policy",
            f"there is no scripted policy for {env_id}; scripted envs: {', '.join(scripted_envs())}",
        )


def make_scripted(arg: str | None, space: spaces.Space, seed: int, env_id: str) -> "Policy":
    noise = check_noise(arg)
    check_env(env_id)
    if not isinstance(space, spaces.Box):
        raise IngestError(422, "invalid_policy", f"scripted policies need a Box action space, {env_id} has {space}")
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    rng = np.random.default_rng(seed)
    control = _SCRIPTS[env_id](low, high)

    def act(observation: Any) -> np.ndarray:
        a = control(np.asarray(observation, dtype=np.float64))
        if noise:
            a = a + rng.normal(0.0, noise * (high - low) / 2)
        return np.clip(a, low, high).astype(space.dtype)

    return act


class _Arm:
    """An env's arm kinematics (from its default MJCF): a point on the hand, its Jacobian, and IK."""

    def __init__(self, xml: str, body: str, n_joints: int):
        import mujoco  # the mujoco family's package; only the scripted MuJoCo envs load it

        self._mj = mujoco
        self.model = _model(xml)
        self.data = mujoco.MjData(self.model)  # per controller: episodes may run in parallel threads
        self.body = self.model.body(body).id
        self.n = n_joints
        self.low, self.high = self.model.jnt_range[:n_joints, 0].copy(), self.model.jnt_range[:n_joints, 1].copy()
        self._jacp = np.zeros((3, self.model.nv))
        # fixed IK restarts (deterministic: an episode stays a pure function of its seed)
        self._restarts = np.random.default_rng(0).uniform(self.low, self.high, size=(8, n_joints))

    def point_and_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[: self.n] = q
        self._mj.mj_kinematics(self.model, self.data)
        self._mj.mj_comPos(self.model, self.data)
        self._mj.mj_jacBody(self.model, self.data, self._jacp, None, self.body)
        return self.data.xpos[self.body].copy(), self._jacp[:, : self.n].copy()

    def ik(self, target: np.ndarray, q: np.ndarray, tol: float = 0.02) -> np.ndarray:
        """Joint angles (within limits) putting the point nearest `target`: damped least squares from
        the current angles first (smooth motion), from the fixed restarts only if that falls short."""
        best: tuple[float, np.ndarray] | None = None
        for start in (q, *self._restarts):
            cand = start.copy()
            for _ in range(30):
                p, jac = self.point_and_jacobian(cand)
                cand = np.clip(cand + _dls(jac, target - p), self.low, self.high)
            miss = float(np.linalg.norm(self.point_and_jacobian(cand)[0] - target))
            if best is None or miss < best[0] - 1e-3:
                best = (miss, cand)
            if miss < tol:
                break
        assert best is not None
        return best[1]


def _dls(jac: np.ndarray, err: np.ndarray, damping: float = 1e-3) -> np.ndarray:
    """Damped least squares: the joint step moving the point by `err`, bounded near singularities."""
    return np.asarray(jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(len(err)), err))


def _assets() -> str:
    import gymnasium.envs.mujoco as gm

    return str(Path(gm.__file__).parent / "assets")


@cache
def _model(xml: str) -> Any:
    import mujoco

    return mujoco.MjModel.from_xml_path(str(Path(_assets()) / xml))


def _reacher(low: np.ndarray, high: np.ndarray) -> Controller:
    """Resolved-rate control: joint velocities that move the fingertip to the target, as torques."""
    arm = _Arm("reacher.xml", "fingertip", 2)

    def control(obs: np.ndarray) -> np.ndarray:
        q = np.arctan2(obs[2:4], obs[0:2])
        _, jac = arm.point_and_jacobian(q)
        wanted = 5.0 * _dls(jac[:2], -obs[8:10])  # obs[8:10] = fingertip - target, in the table plane
        return 0.1 * (wanted - obs[6:8])

    return control


_BEHIND, _PUSH, _ABOVE = 0.08, 0.1, 0.025  # m: palm behind the object, push lookahead, palm over its centre


def _pusher(low: np.ndarray, high: np.ndarray) -> Controller:
    """IK to a waypoint, then joint PD: the palm (the hand's colliding part) goes behind the object,
    on the side away from the goal, then pushes through it towards the goal; back behind it when
    the object slips away. Points near the arm's base are out of reach: the IK then gets as close as
    the joint limits allow."""
    arm = _Arm("pusher.xml", "tips_arm", 7)
    state = {"pushing": False}

    def control(obs: np.ndarray) -> np.ndarray:
        q, qvel, palm, obj, goal = obs[0:7], obs[7:14], obs[14:17], obs[17:20], obs[20:23]
        to_goal = goal[:2] - obj[:2]
        u = to_goal / max(float(np.linalg.norm(to_goal)), 1e-6)
        behind = np.array([*(obj[:2] - _BEHIND * u), obj[2] + _ABOVE])
        rel = palm[:2] - obj[:2]
        if not state["pushing"] and float(np.linalg.norm(palm[:2] - behind[:2])) < 0.04:
            state["pushing"] = True
        elif state["pushing"] and (float(np.linalg.norm(rel)) > 0.15 or float(rel @ u) > 0.0):
            state["pushing"] = False  # slipped past or sideways
        target = np.array([*(obj[:2] + _PUSH * u), obj[2] + _ABOVE]) if state["pushing"] else behind
        return 3.0 * (arm.ik(target, q) - q) - 0.5 * qvel

    return control


_SCRIPTS: dict[str, Callable[[np.ndarray, np.ndarray], Controller]] = {
    "Reacher-v5": _reacher,
    "Pusher-v5": _pusher,
}
