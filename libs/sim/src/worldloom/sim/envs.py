"""Which Gymnasium environments may be recorded, and making them headless.

Env ids come from HTTP callers, so they are allow-listed: an id must be in Gymnasium's registry
*and* its entry point must belong to a known family below (so no compatibility shims, functional
or jax-only envs). Optional families need their package; without it the id is refused with the
extra to install instead of failing deep inside a background job.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

# Headless before pygame / MuJoCo are imported: no display, no audio device, EGL for MuJoCo.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium

from worldloom.video.ingest import IngestError


@dataclass(frozen=True)
class Family:
    name: str
    entry_prefix: str  # entry points of this family's envs start with this module path
    module: str  # import that must succeed to run them
    extra: str  # `pip install worldloom-ingest[<extra>]`; "" = a core dependency
    plugin: bool = False  # importing `module` is what registers the env ids
    ids: str = ""  # for plugins: a pattern of their ids, to name the missing extra instead of "unknown"


FAMILIES: tuple[Family, ...] = (
    Family("classic_control", "gymnasium.envs.classic_control", "pygame", ""),
    Family("toy_text", "gymnasium.envs.toy_text", "pygame", ""),
    Family("box2d", "gymnasium.envs.box2d", "Box2D", "box2d"),
    Family("mujoco", "gymnasium.envs.mujoco", "mujoco", "mujoco"),
    Family("atari", "ale_py", "ale_py", "atari", plugin=True, ids=r"^ALE/"),
    Family("highway", "highway_env", "highway_env", "highway", plugin=True,
           ids=r"^(highway|merge|roundabout|parking|intersection|racetrack|exit|u-turn|two-way|lane-keeping)\b.*-v\d+$"),
)

# gym.make() arguments a caller must not set: we force rgb_array rendering and cap steps ourselves;
# keys naming files or directories would let a request read server paths (e.g. MuJoCo's xml_file).
_RESERVED_KWARGS = frozenset({"render_mode", "max_episode_steps", "autoreset", "apply_api_compatibility",
                              "disable_env_checker", "env_checker"})
_PATH_KEY = re.compile(r"(^|[_\-])(file|filename|path|dir|directory|folder|url|uri)s?($|[_\-])", re.I)
# dotted names are imported by some envs (highway-env's *_type config); slashes are paths
_IMPORT_OR_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$|[/\\]")


@cache
def _plugins_loaded() -> tuple[str, ...]:
    """Imports the installed plugin families once (they register their ids on import)."""
    loaded = []
    for fam in FAMILIES:
        if fam.plugin and importlib.util.find_spec(fam.module) is not None:
            importlib.import_module(fam.module)
            loaded.append(fam.name)
    return tuple(loaded)


def _family_of(entry_point: object) -> Family | None:
    if not isinstance(entry_point, str):
        return None
    module = entry_point.split(":", 1)[0]
    return next((f for f in FAMILIES if module == f.entry_prefix or module.startswith(f.entry_prefix + ".")), None)


def available(family: Family) -> bool:
    return importlib.util.find_spec(family.module) is not None


def allowed_envs() -> dict[str, Family]:
    """Every recordable id (installed or not) -> its family, from the live registry."""
    _plugins_loaded()
    out = {}
    for env_id, spec in gymnasium.registry.items():
        fam = _family_of(spec.entry_point)
        if fam is not None:
            out[env_id] = fam
    return out


def resolve_env(env_id: str) -> Family:
    """The family of an allowed, runnable env id; IngestError 422 (unknown) or 501 (package missing)."""
    spec = gymnasium.registry.get(env_id)
    if spec is None:
        _plugins_loaded()  # only now: importing highway-env costs seconds
        spec = gymnasium.registry.get(env_id)
    fam = _family_of(spec.entry_point) if spec is not None else None
    if fam is None:
        envs = allowed_envs()
        for plugin in FAMILIES:
            if plugin.ids and re.match(plugin.ids, env_id) and not available(plugin):
                raise _missing(env_id, plugin)
        close = difflib.get_close_matches(env_id, list(envs), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise IngestError(422, "unknown_env",
                          f"{env_id!r} is not a recordable Gymnasium environment on this server{hint} "
                          "(GET /v1/sources/gymnasium/envs lists them)")
    if not available(fam):
        raise _missing(env_id, fam)
    return fam


def _install_hint(fam: Family) -> str:
    return f"install worldloom-ingest[{fam.extra}]" if fam.extra else "reinstall worldloom-ingest (a core dependency)"


def _missing(env_id: str, fam: Family) -> IngestError:
    return IngestError(501, "env_unavailable", f"{env_id} needs the Python package {fam.module!r}, "
                       f"not installed on this server: {_install_hint(fam)}")


def check_env_kwargs(kwargs: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Refuses kwargs we control ourselves, anything that looks like a path, and oversized blobs."""
    try:
        size = len(json.dumps(kwargs, sort_keys=True, allow_nan=False))
    except ValueError as exc:
        raise IngestError(422, "invalid_env_kwargs", f"env_kwargs must be plain JSON: {exc}") from None
    if size > max_bytes:
        raise IngestError(422, "invalid_env_kwargs", f"env_kwargs is {size} bytes as JSON; the limit is {max_bytes}")
    for key in kwargs:
        if key in _RESERVED_KWARGS:
            raise IngestError(422, "invalid_env_kwargs", f"env_kwargs may not set {key!r}: the recorder sets it")
    for key, text in _walk(kwargs):
        if _PATH_KEY.search(re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)):  # xml_file, xmlFile, model-path
            raise IngestError(422, "invalid_env_kwargs", f"env_kwargs may not set {key!r}: no file or path arguments")
        if text is not None and _IMPORT_OR_PATH.search(text):
            raise IngestError(422, "invalid_env_kwargs",
                              f"env_kwargs value {text[:80]!r} looks like a path or an import name; refused")
    return kwargs


def _walk(value: Any, key: str = "") -> list[tuple[str, str | None]]:
    """(key, string value or None) for every key and string leaf, nested dicts and lists included."""
    if isinstance(value, dict):
        return [(str(k), None) for k in value] + [p for k, v in value.items() for p in _walk(v, str(k))]
    if isinstance(value, list):
        return [p for v in value for p in _walk(v, key)]
    return [(key, value)] if isinstance(value, str) else []


@cache
def load_triton_before_mesa() -> bool:
    """Import triton (torch's GPU compiler, a dependency of the CUDA torch builds) if it is installed.

    Why: on a machine without a GPU, MuJoCo's EGL is Mesa's software renderer (llvmpipe), which carries
    its own LLVM, and so does triton's native library. A process that loads Mesa first and triton after
    (torch imports it with its first optimizer) dies with a segmentation fault in the loader; the other
    order works, so :func:`make_env` calls this before it makes a MuJoCo env. Returns whether triton was
    loaded."""
    try:
        importlib.import_module("triton")
    except Exception:  # absent (CPU-only torch) or broken: nothing to order
        return False
    return True


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None) -> gymnasium.Env:
    """gym.make with rgb_array rendering; dependency and argument errors become IngestError."""
    fam = resolve_env(env_id)
    if fam.name == "mujoco":
        load_triton_before_mesa()
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array", **(env_kwargs or {}))
    except (gymnasium.error.DependencyNotInstalled, ImportError) as exc:
        raise IngestError(501, "env_unavailable", f"{env_id}: {exc} ({_install_hint(fam)})") from None
    except TypeError as exc:  # an unexpected keyword argument
        raise IngestError(422, "invalid_env_kwargs", f"{env_id} rejected env_kwargs: {exc}") from None
    except Exception as exc:
        raise IngestError(422, "env_error", f"could not make {env_id}: {exc.__class__.__name__}: {exc}") from None
    if "rgb_array" not in (env.metadata.get("render_modes") or ()):
        env.close()
        raise IngestError(422, "env_cannot_render", f"{env_id} has no rgb_array render mode")
    if fam.name == "mujoco":
        _fit_shadow_map(env)
    return env


def _fit_shadow_map(env: gymnasium.Env) -> None:
    """MuJoCo models ask for 4096^2 shadow maps (Pusher: ~100 ms a frame on a software GL, 25 ms with
    512^2, the same picture at 64x64): size them to the frame, before the first render makes the context."""
    base = env.unwrapped
    model = getattr(base, "model", None)
    size = max(int(getattr(base, "width", 0) or 0), int(getattr(base, "height", 0) or 0))
    if model is not None and size:
        quality = model.vis.quality
        quality.shadowsize = min(int(quality.shadowsize), max(512, 8 * size))
