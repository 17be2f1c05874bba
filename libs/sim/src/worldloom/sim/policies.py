"""Policies that choose actions while recording, by name: "random", "constant:<json>", "scripted[:<noise>]".

A policy spec is "<name>" or "<name>:<argument>". Every policy is seeded from the episode seed, so
an episode is a pure function of (env, env_kwargs, seed, policy, max_steps) — the property that
makes re-recording give the same video id. Register more (trained...) with `register_policy`; the
spec string is stored with each episode. Factories and checks get the env id: "scripted" exists for
some envs only (worldloom.sim.scripted: MuJoCo Reacher-v5 and Pusher-v5 arms).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from gymnasium import spaces

from worldloom.sim.scripted import check_env, check_noise, make_scripted
from worldloom.video.ingest import IngestError


class Policy(Protocol):
    def __call__(self, observation: Any) -> Any:
        """The action to take given the observation the current frame shows."""


# (argument or None, action space, episode seed, env id) -> policy; raise IngestError for a bad argument
PolicyFactory = Callable[[str | None, spaces.Space, int, str], Policy]
# (argument or None, env id or None) -> anything; a cheap check before any env exists (request time)
ArgCheck = Callable[[str | None, str | None], object]

_REGISTRY: dict[str, tuple[PolicyFactory, ArgCheck]] = {}


def register_policy(name: str, factory: PolicyFactory, check: ArgCheck | None = None) -> None:
    _REGISTRY[name] = (factory, check or (lambda _arg, _env: None))


def policy_names() -> list[str]:
    return sorted(_REGISTRY)


def parse_policy(spec: str, env_id: str | None = None) -> tuple[str, str | None]:
    """Splits and checks a spec (for `env_id` when given); IngestError 422 naming the known policies."""
    name, sep, arg = spec.partition(":")
    if name not in _REGISTRY:
        raise IngestError(422, "unknown_policy", f"unknown policy {name!r}; known: {', '.join(policy_names())}")
    _REGISTRY[name][1](arg if sep else None, env_id)
    return name, (arg if sep else None)


def make_policy(spec: str, action_space: spaces.Space, seed: int, env_id: str = "") -> Policy:
    name, arg = parse_policy(spec, env_id or None)
    return _REGISTRY[name][0](arg, action_space, seed, env_id)


# --- random -----------------------------------------------------------------------------------
def _no_arg(arg: str | None, _env_id: str | None = None) -> None:
    if arg is not None:
        raise IngestError(422, "invalid_policy", "policy 'random' takes no argument")


def _random(arg: str | None, space: spaces.Space, seed: int, _env_id: str = "") -> Policy:
    space.seed(seed)  # the space's own generator: independent of the env's, reproducible per episode
    return lambda _obs: space.sample()


# --- constant:<json> --------------------------------------------------------------------------
def _constant_value(arg: str | None, _env_id: str | None = None) -> Any:
    if arg is None:
        raise IngestError(422, "invalid_policy", "policy 'constant' needs a value, e.g. constant:1 or constant:[0.5]")
    try:
        return json.loads(arg)
    except json.JSONDecodeError:
        raise IngestError(422, "invalid_policy", f"constant:{arg} — the value must be JSON (a number or a list)") from None


def _constant(arg: str | None, space: spaces.Space, seed: int, _env_id: str = "") -> Policy:
    value = _constant_value(arg)
    if isinstance(space, spaces.Discrete):
        action: Any = np.int64(value) if isinstance(value, int) and not isinstance(value, bool) else None
    elif isinstance(space, spaces.Box):
        try:
            action = np.broadcast_to(np.asarray(value, dtype=space.dtype), space.shape).copy()
        except (TypeError, ValueError):
            action = None
    elif isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        try:
            action = np.asarray(value, dtype=space.dtype).reshape(space.shape)
        except (TypeError, ValueError):
            action = None
    else:
        action = None
    if action is None or not space.contains(action):
        raise IngestError(422, "invalid_policy", f"constant:{arg} is not an action of {space}")
    return lambda _obs: action


# --- scripted[:<noise>] (per env: MuJoCo arms) ---------------------------------------------------
def _scripted_check(arg: str | None, env_id: str | None) -> None:
    check_noise(arg)
    check_env(env_id)


register_policy("random", _random, _no_arg)
register_policy("constant", _constant, _constant_value)
register_policy("scripted", make_scripted, _scripted_check)
