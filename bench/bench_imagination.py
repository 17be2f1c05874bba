"""Imagination throughput: WorldModelEnv steps/s for N = 1, 16, 256 imagined envs vs a real CartPole-v1.

Both sides in one run. The real side steps ``CartPole-v1`` with ``rgb_array`` rendering and fits every
frame to 64x64 (``fit_frames``, what the platform's pixel pipeline does), one env, random actions, resets
included. Its first episodes are also the imagined side's real context clips. The imagined side is a
:class:`~worldloom.models.rl.WorldModelEnv` of a small model of each family on 64x64 frames (tiny 4x8x8
tokenizer: an 8x8 latent grid; AR: 64 tokens per frame; diffusion: 2x2 patches, ``--steps`` flow steps),
observing latents (what a policy trained in imagination acts on) or decoded pixels.

Throughput does not depend on what the weights learnt, so the models are freshly initialised (with a
reward head forced not to terminate, so no autoreset skews the count). One imagined step is one latent
transition, i.e. ``t_compression`` (4) real frames; the table shows both "per step" and "per real-frame
equivalent" ratios.

Two clocks, because the benchmark machines are shared: wall-clock steps/s, and steps per CPU-second of
this process (``time.process_time``). With ``--threads 1`` (the default; the real env is single-threaded
too) the CPU-time rate is what one core delivers and barely moves when other jobs compete for the cores,
while the wall rate does; the ratios use a real-env measurement taken right before each row, so both sides
of a ratio ran under the same load.

    nice -n 19 .venv/bin/python bench/bench_imagination.py [--seconds 3] [--threads 1] [--device cpu] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch

from worldloom.models.frames import fit_frames
from worldloom.models.rl import ContextClip, WorldModelEnv
from worldloom.models.tokenizer import CausalVideoTokenizer, TokenizerConfig
from worldloom.models.world import ActionSpec, Sampling, family_class

RES = 64
NUM_ENVS = (1, 16, 256)


class Rate:
    """Steps per wall-clock second and per CPU-second of this process, over one measurement."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def done(self, steps: float) -> tuple[float, float]:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return steps / wall, steps / max(cpu, 1e-9)


def cartpole(seed: int) -> Any:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gymnasium as gym

    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.action_space.seed(seed)
    env.reset(seed=seed)
    return env


def frame(env: Any) -> np.ndarray:
    return fit_frames(env.render()[None], (RES, RES))[0]


def real_rate(env: Any, seconds: float) -> tuple[float, float]:
    """Real steps/s (wall, CPU): step + render + fit to RES, random actions, resets included."""
    env.reset()
    frame(env)
    steps, rate = 0, Rate()
    while time.perf_counter() - rate.wall < seconds:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        frame(env)
        steps += 1
        if terminated or truncated:
            env.reset()
            frame(env)
    return rate.done(steps)


def real_contexts(env: Any, clips: int, clip_frames: int) -> list[ContextClip]:
    """The first ``clips`` random-policy episodes of at least ``clip_frames`` frames, as context clips."""
    out: list[ContextClip] = []
    while len(out) < clips:
        env.reset()
        frames, actions = [frame(env)], []
        done = False
        while not done:
            a = int(env.action_space.sample())
            _, _, terminated, truncated, _ = env.step(a)
            frames.append(frame(env))
            actions.append(a)
            done = terminated or truncated
        if len(frames) >= clip_frames:
            out.append(ContextClip(np.stack(frames[:clip_frames]), np.asarray(actions[:clip_frames - 1])))
    return out


def small_model(family: str, device: str) -> tuple[Any, CausalVideoTokenizer]:
    cls = family_class(family)
    tok = CausalVideoTokenizer(TokenizerConfig.preset("tiny", cls.latent_kind, "4x8x8")).eval().to(device)
    shape = cls.__new__(cls).encode_video(tok, torch.zeros(1, 3, 9, RES, RES, device=device)).shape[1:]
    cfg = cls.config_for_data(tok.config, shape, size="tiny", action=ActionSpec.discrete(2), reward_head=True,
                              window=3, context_frames=2, horizon=1, options={})
    torch.manual_seed(0)
    model = cls(cfg).eval().to(device)
    assert model.reward is not None
    last = model.reward.mlp[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():  # never terminate: every measured step is a model step, not an autoreset
        last.weight[1].zero_()
        last.bias[1] = -20.0
    return model, tok


def imagined(env: WorldModelEnv, seconds: float, min_steps: int = 3) -> tuple[float, float]:
    env.reset(seed=0)
    env.action_space.seed(0)
    env.step(env.action_space.sample())  # warm-up
    steps, rate = 0, Rate()
    while steps < min_steps or time.perf_counter() - rate.wall < seconds:
        env.step(env.action_space.sample())
        steps += 1
    return rate.done(env.num_envs * steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="wall-clock per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the real env uses one core)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=4, help="diffusion flow-matching steps per imagined frame")
    ap.add_argument("--families", default="ar,diffusion")
    ap.add_argument("--observations", default="latents,pixels")
    ap.add_argument("--num-envs", default=",".join(str(n) for n in NUM_ENVS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    real = cartpole(seed=0)
    contexts = real_contexts(real, clips=4, clip_frames=9)
    print(f"real: CartPole-v1, rgb_array rendering fit to {RES}x{RES}, 1 env, random actions; measured right "
          f"before each row. torch threads {args.threads}, device {args.device}. wall = steps per second, "
          f"cpu = steps per CPU-second of this process")
    print()
    header = (f"{'family':<10} {'obs':<8} {'N':>4} | {'real wall/s':>11} {'real cpu/s':>10} | "
              f"{'imag wall/s':>11} {'imag cpu/s':>10} | {'x real wall':>11} {'x real cpu':>10} "
              f"{'x real cpu (frames)':>19}")
    print(header)
    print("-" * len(header))
    tc = 1
    for family in args.families.split(","):
        model, tok = small_model(family, args.device)
        tc = tok.config.t_compression
        sampling = Sampling(steps=args.steps) if "steps" in model.sampling_options else Sampling()
        for obs in args.observations.split(","):
            for n in (int(v) for v in args.num_envs.split(",")):
                env = WorldModelEnv(model, tok, contexts, num_envs=n, observation=obs,  # type: ignore[arg-type]
                                    max_episode_steps=10**9, sampling=sampling)
                real_wall, real_cpu = real_rate(real, min(args.seconds, 2.0))
                wall, cpu = imagined(env, args.seconds)
                print(f"{family:<10} {obs:<8} {n:>4} | {real_wall:>11,.0f} {real_cpu:>10,.0f} | {wall:>11,.1f} "
                      f"{cpu:>10,.1f} | {wall / real_wall:>11.3f} {cpu / real_cpu:>10.3f} "
                      f"{cpu * tc / real_cpu:>19.3f}", flush=True)
    real.close()
    print()
    print(f"AR: tiny ({model_desc('ar')}), 64 tokens/frame, KV cache within a step; diffusion: tiny "
          f"({model_desc('diffusion')}), {args.steps} Euler steps/frame; context 2 latent frames. One imagined "
          f"step = {tc} real frames: 'x real cpu (frames)' counts an imagined step as {tc} real steps.")


def model_desc(family: str) -> str:
    cfg = family_class(family).config_class.preset("tiny")  # type: ignore[attr-defined]
    return f"{cfg.n_layer} layers x {cfg.d_model}"


if __name__ == "__main__":
    main()
