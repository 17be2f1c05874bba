"""Record Gymnasium episodes headlessly: an H.264 MP4 plus the actions that produced it.

Frame alignment (the contract every consumer relies on): an episode of T steps has T + 1 frames.
frame[0] is rendered after reset; frame[i] is what the agent saw *before* action[i]; frame[i + 1]
is the result of action[i]; frame[T] follows the last step. The arrays file (safetensors, never
pickle) holds actions/rewards/terminated/truncated with T rows and, when small, observations with
T + 1 rows aligned with the frames. truncated[T - 1] is also true when `max_steps` cut the episode.
The arrays are checked, normalised and encoded by worldloom.core.episodes, like an upload's.

Episode k of a request with `seed` s is reset with seed s + k and its policy seeded with s + k, in
a freshly made env: an episode depends only on (env, env_kwargs, s + k, policy, max_steps), and
the MP4 encoding is deterministic, so recording it again yields the same bytes (same video id).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium  # after envs: it sets the headless rendering variables first
import numpy as np

from worldloom.core.episodes import SPECS, Episode, EpisodeLimits, check_arrays
from worldloom.core.errors import Refusal
from worldloom.sim.arrays import action_dtype, describe_space, space_shape, stored_observation_dtype
from worldloom.sim.envs import check_env_kwargs, make_env, resolve_env
from worldloom.sim.policies import Policy, make_policy, parse_policy
from worldloom.sim.settings import GymnasiumLimits
from worldloom.video.ingest import IngestError
from worldloom.video.mp4_writer import Mp4Writer

FORMAT = "worldloom.gymnasium/1"
FRAME_ALIGNMENT = (
    "T steps -> T+1 frames; frame[i] is the observation before action[i], frame[i+1] its result; "
    "actions, rewards, terminated, truncated have T rows; observations (if stored) have T+1 rows, one per frame"
)
DEFAULT_FPS = 30.0
MAX_SEED = 2**31 - 1  # ALE and some envs take 32-bit signed seeds
_SIZE_KWARGS = ("width", "height", "screen_width", "screen_height")  # MuJoCo, highway-env render sizes

StepCallback = Callable[[int], None]  # steps done so far in this episode
ProgressCallback = Callable[[int, int], None]  # (episode index, steps done in it)


@dataclass(frozen=True)
class EpisodeRecording:
    """One recorded episode: files in the caller's out_dir plus what they contain."""

    env_id: str
    episode: int  # index within the request
    seed: int  # the seed this episode was reset with (request seed + episode)
    policy: str
    max_steps: int
    steps: int  # T: actions taken; the video has T + 1 frames
    fps: float
    width: int  # encoded size (the rendered size padded to even)
    height: int
    total_reward: float
    ended_by: str  # "terminated" | "truncated" (by the env) | "max_steps"
    video_path: Path
    arrays_path: Path  # safetensors: actions, rewards, terminated, truncated[, observations]
    description_path: Path  # JSON: spaces, alignment, shapes/dtypes, provenance
    description: dict[str, Any] = field(repr=False)
    arrays: Episode = field(repr=False)  # the checked arrays ingest stores (the two files' content)

    @property
    def frames(self) -> int:
        return self.steps + 1

    def attributes(self) -> dict[str, str]:
        """The video's ingest attributes: where it came from (ingest adds where its actions are)."""
        d = self.description
        attrs = {
            "source": "gymnasium", "dataset": f"gymnasium/{self.env_id}", "env": self.env_id,
            "episode": str(self.episode), "seed": str(self.seed), "policy": self.policy,
            "max_steps": str(self.max_steps), "steps": str(self.steps), "ended_by": self.ended_by,
            "total_reward": repr(self.total_reward), "action_space": d["action_space"]["repr"],
            "frame_alignment": "frames=steps+1; frame[i] precedes action[i]",
            "gymnasium_version": gymnasium.__version__,
            "description": f"{self.env_id} simulation, {self.policy} policy, {self.steps} steps",
        }
        if d["env_kwargs"]:
            attrs["env_kwargs"] = json.dumps(d["env_kwargs"], sort_keys=True)
        return attrs


def check_request(env_id: str, episodes: int, policy: str, seed: int, max_steps: int,
                  env_kwargs: dict[str, Any] | None, limits: GymnasiumLimits) -> None:
    """Everything checkable without running the env; IngestError (4xx/501) naming the problem."""
    if not 1 <= episodes <= limits.max_episodes:
        raise IngestError(422, "too_many_episodes",
                          f"episodes must be between 1 and {limits.max_episodes} (max_episodes), got {episodes}")
    if not 1 <= max_steps <= limits.max_steps:
        raise IngestError(422, "too_many_steps",
                          f"max_steps must be between 1 and {limits.max_steps} (max_steps), got {max_steps}")
    if seed < 0 or seed + episodes - 1 > MAX_SEED:
        raise IngestError(422, "invalid_seed", f"seed + episodes - 1 must be within 0..{MAX_SEED}, got seed {seed}")
    resolve_env(env_id)
    parse_policy(policy, env_id)
    check_env_kwargs(env_kwargs or {}, limits.max_env_kwargs_bytes)
    for key, value in _sizes(env_kwargs or {}):  # refuse an oversized render before the env allocates it
        if value > max(limits.max_width, limits.max_height):
            raise IngestError(422, "resolution_too_large", f"env_kwargs {key}={value} is over the limit "
                              f"{limits.max_width}x{limits.max_height} (max_width x max_height)")


def _sizes(kwargs: dict[str, Any]) -> list[tuple[str, float]]:
    """Render-size arguments, also nested (highway-env takes them in its `config` dict)."""
    out = []
    for key, value in kwargs.items():
        if isinstance(value, dict):
            out += _sizes(value)
        elif key in _SIZE_KWARGS and isinstance(value, (int, float)):
            out.append((key, value))
    return out


def record_episodes(
    env_id: str,
    episodes: int,
    policy: str = "random",
    seed: int = 0,
    max_steps: int = 500,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    env_kwargs: dict[str, Any] | None = None,
    limits: GymnasiumLimits | None = None,
    progress: ProgressCallback | None = None,
    episode_limits: EpisodeLimits | None = None,
) -> list[EpisodeRecording]:
    """Records `episodes` episodes (episode k seeded with seed + k) into out_dir (a new temp dir if None).

    The caller owns the files; hand each recording to `worldloom.sim.ingest.ingest_recording` to store it.
    Raises IngestError for a refused request or an env that fails.
    """
    limits = limits or GymnasiumLimits()
    check_request(env_id, episodes, policy, seed, max_steps, env_kwargs, limits)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="wl-gym-"))
    out.mkdir(parents=True, exist_ok=True)
    recordings = []
    for k in range(episodes):
        on_step = (lambda n, k=k: progress(k, n)) if progress else None
        recordings.append(record_episode(env_id, k, seed + k, policy, max_steps, out, env_kwargs=env_kwargs,
                                         limits=limits, on_step=on_step, episode_limits=episode_limits))
    return recordings


def record_episode(
    env_id: str,
    episode: int,
    seed: int,
    policy: str,
    max_steps: int,
    out_dir: Path,
    *,
    env_kwargs: dict[str, Any] | None = None,
    limits: GymnasiumLimits | None = None,
    on_step: StepCallback | None = None,
    episode_limits: EpisodeLimits | None = None,
    wrap: Callable[[gymnasium.Env], gymnasium.Env] | None = None,
    act: Policy | None = None,
) -> EpisodeRecording:
    """One episode in a fresh env, reset with `seed` (already the per-episode seed); its arrays are checked
    against `episode_limits` (the ingest service's) like an upload's.

    `wrap` wraps the fresh env (e.g. pixels-only observations: what the recorder renders is then the
    wrapper's frame) and `act` replaces the named `policy`'s actions (an agent being trained, services/rlsim);
    `policy` is then only the provenance string stored with the episode."""
    limits = limits or GymnasiumLimits()
    env_kwargs = dict(env_kwargs or {})
    stem = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', env_id)}_ep{episode:04d}_seed{seed}"
    paths = (out_dir / f"{stem}.mp4", out_dir / f"{stem}.actions.safetensors", out_dir / f"{stem}.actions.json")
    env = make_env(env_id, env_kwargs)
    if wrap is not None:
        env = wrap(env)
    try:
        return _record(env, env_id, episode, seed, policy, max_steps, env_kwargs, limits, paths, on_step,
                       episode_limits or EpisodeLimits(), act)
    except BaseException:
        for p in paths:
            p.unlink(missing_ok=True)
        raise
    finally:
        env.close()


def _record(
    env: gymnasium.Env, env_id: str, episode: int, seed: int, policy: str, max_steps: int,
    env_kwargs: dict[str, Any], limits: GymnasiumLimits, paths: tuple[Path, Path, Path],
    on_step: StepCallback | None, episode_limits: EpisodeLimits, act: Policy | None = None,
) -> EpisodeRecording:
    video_path, arrays_path, description_path = paths
    act_dtype = action_dtype(env.action_space)
    obs_dtype = stored_observation_dtype(env.observation_space, limits.max_observation_bytes)
    act = act or make_policy(policy, env.action_space, seed, env_id)
    fps = _render_fps(env, env_id)
    try:
        obs, _ = env.reset(seed=seed)
    except Exception as exc:
        raise IngestError(500, "env_error", f"{env_id} reset failed: {exc.__class__.__name__}: {exc}") from None
    first = _render(env, env_id, limits, first=True)
    actions: list[Any] = []
    rewards: list[float] = []
    terms: list[bool] = []
    truncs: list[bool] = []
    observations: list[Any] = [obs]
    terminated = truncated = False
    with Mp4Writer(video_path, fps) as writer:
        writer.write(first)
        while len(actions) < max_steps and not (terminated or truncated):
            action = act(obs)
            try:
                obs, reward, terminated, truncated, _ = env.step(action)
            except Exception as exc:
                raise IngestError(500, "env_error", f"{env_id} step {len(actions)} failed: "
                                  f"{exc.__class__.__name__}: {exc}") from None
            actions.append(action)
            rewards.append(float(reward))
            terms.append(bool(terminated))
            truncs.append(bool(truncated))
            if obs_dtype is not None:
                observations.append(obs)
            writer.write(_render(env, env_id, limits))
            if on_step:
                on_step(len(actions))
    ended_by = "terminated" if terminated else "truncated" if truncated else "max_steps"
    truncs[-1] = truncs[-1] or ended_by == "max_steps"
    arrays = {
        "actions": np.asarray(actions, dtype=act_dtype).reshape((len(actions), *space_shape(env.action_space))),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "terminated": np.asarray(terms, dtype=np.bool_),
        "truncated": np.asarray(truncs, dtype=np.bool_),
    }
    if obs_dtype is not None:
        arrays["observations"] = np.asarray(observations, dtype=obs_dtype).reshape(
            (len(observations), *space_shape(env.observation_space)))
    try:  # the checks an upload's arrays get (an env may return NaN rewards, or too wide an action)
        checked = check_arrays(arrays, episode_limits, allowed=tuple(SPECS))
    except Refusal as exc:
        raise IngestError(exc.status, exc.code, f"{env_id}: {exc.message}") from None
    total_reward = float(np.sum(np.asarray(rewards, dtype=np.float64)))
    provenance = {
        "env": env_id, "env_kwargs": env_kwargs, "episode": episode, "seed": seed,
        "policy": policy, "max_steps": max_steps, "frames": len(actions) + 1, "fps": float(fps),
        "render_width": int(first.shape[1]), "render_height": int(first.shape[0]),
        "video_width": writer.width, "video_height": writer.height, "ended_by": ended_by,
        "total_reward": total_reward, "frame_alignment": FRAME_ALIGNMENT,
        "action_space": describe_space(env.action_space),
        "observation_space": describe_space(env.observation_space),
        "observations_stored": obs_dtype is not None,
        "gymnasium_version": gymnasium.__version__,
    }
    ep = Episode(checked, FORMAT, header={"env": env_id, "frame_alignment": FRAME_ALIGNMENT}, fields=provenance)
    arrays_path.write_bytes(ep.encode())
    description_path.write_bytes(ep.description_bytes(len(actions) + 1, fps))
    return EpisodeRecording(
        env_id=env_id, episode=episode, seed=seed, policy=policy, max_steps=max_steps, steps=len(actions),
        fps=float(fps), width=writer.width, height=writer.height, total_reward=total_reward, ended_by=ended_by,
        video_path=video_path, arrays_path=arrays_path, description_path=description_path,
        description=ep.describe(len(actions) + 1, fps), arrays=ep,
    )


def _render(env: gymnasium.Env, env_id: str, limits: GymnasiumLimits, first: bool = False) -> np.ndarray:
    try:
        frame = env.render()
    except Exception as exc:
        if first:  # typically no headless GL: MuJoCo needs EGL (libegl1 + libegl-mesa0) or MUJOCO_GL=osmesa
            raise IngestError(501, "render_unavailable", f"{env_id} cannot render headless here "
                              f"(MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {exc.__class__.__name__}: {exc}") from None
        raise IngestError(500, "env_error", f"{env_id} render failed: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        raise IngestError(422, "env_cannot_render", f"{env_id} did not render an RGB frame (got {type(frame).__name__})")
    h, w = frame.shape[:2]
    if max(h, w) > max(limits.max_width, limits.max_height) or min(h, w) > min(limits.max_width, limits.max_height):
        raise IngestError(422, "resolution_too_large",
                          f"{env_id} renders {w}x{h}; the limit is {limits.max_width}x{limits.max_height} "
                          "(max_width x max_height, either orientation)")
    return frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)


def _render_fps(env: gymnasium.Env, env_id: str) -> float:
    fps = env.metadata.get("render_fps") or DEFAULT_FPS
    if not (isinstance(fps, (int, float)) and 0 < fps <= 240):
        raise IngestError(422, "env_cannot_render", f"{env_id} declares render_fps={fps!r}; expected 0 < fps <= 240")
    return float(fps)
