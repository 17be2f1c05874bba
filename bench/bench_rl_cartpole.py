"""Sample efficiency of learning in a world model: the rlsim service loop vs Stable-Baselines3 PPO, same pixels,
same budget of real steps, one run.

Worldloom side: an in-process rlsim service (local store, in-process bus: every episode is ingested as a video
with its actions and rewards, as in production) runs one experiment on ``--env`` observed as ``--resolution``
pixels: random warm-up episodes, then per iteration world-model updates, imagination training, a real
evaluation (``--iter-eval`` episodes on fresh seeds) and more real episodes with the new policy, until ``--steps``
real steps are spent. The world model is a new tiny model (``--family``, diffusion by default) on a tokenizer
the experiment trains itself. The
agent decides once per ``t_compression`` (4) real steps and holds its action (the world model's clock).

Baseline: SB3 PPO with its CnnPolicy on the same frames (the same pixels-only wrapper, 4 stacked frames: the
motion a latent frame carries), ``--steps`` real steps; every ``--eval-every`` steps an evaluation of
``--iter-eval`` episodes on fresh seeds (not counted in the budget, as on the worldloom side).

Reported for both: mean return over ``--eval-episodes`` (20) final real episodes on seeds neither used; the real
steps when the periodic evaluation first reached each threshold (CartPole-v1: 195 and 450; Pendulum-v1: -400
and -200); the sample-efficiency ratio = PPO's steps / worldloom's steps to the first threshold both reached.

    nice -n 19 .venv/bin/python bench/bench_rl_cartpole.py --quick            # ~1-2 min: tiny everything
    nice -n 19 .venv/bin/python bench/bench_rl_cartpole.py [--env Pendulum-v1] [--steps 30000] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

THRESHOLDS = {"CartPole-v1": (195.0, 450.0), "Pendulum-v1": (-400.0, -200.0)}
FRESH_SEED = 1_900_000_000  # final evaluations: far from every seed either side trains or evaluates on


@dataclass
class SideResult:
    name: str
    final_returns: list[float]
    curve: list[tuple[int, float]]  # (real steps, mean evaluation return)
    seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.final_returns))


def first_reaching(curve: list[tuple[int, float]], threshold: float) -> int | None:
    """Real steps at the first evaluation whose mean return is >= ``threshold`` (None: never)."""
    return next((int(s) for s, v in curve if v >= threshold), None)


def efficiency_ratio(
    baseline: SideResult, ours: SideResult, thresholds: tuple[float, ...]
) -> tuple[float, float] | None:
    """(threshold, baseline steps / our steps) for the first threshold both reached."""
    for t in thresholds:
        a, b = first_reaching(baseline.curve, t), first_reaching(ours.curve, t)
        if a is not None and b is not None and b > 0:
            return t, a / b
    return None


# ------------------------------------------------------------------------------------------- worldloom


def experiment_request(
    env_id: str,
    steps: int,
    resolution: int,
    seed: int,
    quick: bool,
    iter_eval: int,
    device: str,
    family: str = "diffusion",
) -> dict[str, Any]:
    """The experiment the bench runs (quick: a smoke-sized one). Diffusion by default: one imagined frame is
    ``sampling_steps`` passes, where the AR family samples its 64 tokens one by one (about 8x slower
    imagination on CPU at 64x64)."""
    if quick:
        wm = {
            "family": family,
            "size": "tiny",
            "config": {"n_layer": 2, "d_model": 64, "n_head": 2},
            "tokenizer": {"size": "tiny", "channels": 16, "steps": 20, "batch": 4},
            "window": 4,
            "context_frames": 3,
            "updates": 30,
            "batch": 8,
            "sampling_steps": 2,
        }
        agent = {
            "hidden": 64,
            "layers": 2,
            "updates": 30,
            "imagined_envs": 16,
            "horizon": 10,
            "imagined_episode_steps": 50,
        }
        loop = {"warmup_steps": min(steps, 500), "steps_per_iteration": 500}
    else:
        wm = {
            "family": family,
            "size": "tiny",
            "tokenizer": {"size": "tiny", "steps": 600, "batch": 8},
            "window": 4,
            "context_frames": 3,
            "updates": 200,
            "batch": 16,
            "sampling_steps": 4,
        }
        agent = {
            "hidden": 256,
            "layers": 2,
            "updates": 100,
            "imagined_envs": 32,
            "horizon": 15,
            "imagined_episode_steps": 125,
        }
        loop = {"warmup_steps": min(steps, 2000), "steps_per_iteration": 1000}
    return {
        "name": "bench",
        "env_id": env_id,
        "resolution": resolution,
        "steps": steps,
        **loop,
        "eval_episodes": iter_eval,
        "seed": seed,
        "use_gpu": device == "cuda",
        "world_model": wm,
        "agent": agent,
    }


def run_worldloom(
    req: dict[str, Any], eval_episodes: int, work: Path, poll_s: float = 1.0, log: Any = print
) -> SideResult:
    """The experiment through the rlsim service (in-process), then ``eval_episodes`` fresh-seed episodes."""
    from fastapi.testclient import TestClient

    from worldloom.core.bus.inprocess import InProcessBus
    from worldloom.core.settings import HttpSettings, StoreSettings
    from worldloom.core.store.local import LocalStore
    from worldloom.rlsim.app import build_app
    from worldloom.rlsim.settings import RlsimSettings

    settings = RlsimSettings(
        http=HttpSettings(auth_required=False),
        store=StoreSettings(root=work / "store"),
        rl={"max_eval_episodes": max(eval_episodes, 1)},
    )
    start = time.perf_counter()
    with TestClient(build_app(settings, store=LocalStore(work / "store"), bus=InProcessBus())) as client:
        r = client.post("/v1/experiments", json=req)
        if r.status_code != 202:
            raise SystemExit(f"the service refused the experiment: {r.text}")
        eid = r.json()["experiment_id"]
        last = -1
        while True:
            rec = client.get(f"/v1/experiments/{eid}").json()
            if rec["step"] != last:
                last = rec["step"]
                ret = (rec["curves"].get("real_return") or [[0, float("nan")]])[-1][1]
                log(
                    f"  worldloom {rec['state']:<9} real steps {rec['step']:>6}/{rec['total_steps']}  "
                    f"eval return {ret:8.1f}  {time.perf_counter() - start:6.0f}s"
                )
            if rec["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(poll_s)
        if rec["state"] != "succeeded":
            raise SystemExit(f"experiment {eid} ended {rec['state']}: {rec['error']}")
        policy_id = rec["lineage"]["policy_id"]
        ev = client.post(
            f"/v1/policies/{policy_id}/evaluate", json={"episodes": eval_episodes, "seed": FRESH_SEED, "video": False}
        ).json()
    curve = [(int(s), float(v)) for s, v in rec["curves"].get("real_return", [])]
    rates = [v for _, v in rec["curves"].get("imagined_steps_per_s", [])]
    return SideResult(
        "worldloom (rlsim)",
        ev["returns"],
        curve,
        time.perf_counter() - start,
        {
            "iterations": rec["metrics"].get("iterations"),
            "episodes_ingested": rec["metrics"].get("episodes"),
            "imagined_steps_per_s": float(np.median(rates)) if rates else None,
            "policy": policy_id,
        },
    )


# ------------------------------------------------------------------------------------------------- SB3


def pixel_env(env_id: str, resolution: int) -> Any:
    """The same pixels-only observation the worldloom agent gets (``PixelObservation``)."""
    from worldloom.models.rl.real import PixelObservation
    from worldloom.sim.envs import make_env

    return PixelObservation(make_env(env_id), resolution)


def evaluate_sb3(model: Any, env_id: str, resolution: int, episodes: int, seed: int, stack: int = 4) -> list[float]:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    returns = []
    for k in range(episodes):
        venv = VecTransposeImage(VecFrameStack(DummyVecEnv([lambda: pixel_env(env_id, resolution)]), stack))
        venv.seed(seed + k)
        obs = venv.reset()
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, dones, _ = venv.step(action)
            total += float(reward[0])
            done = bool(dones[0])
        venv.close()
        returns.append(total)
    return returns


def run_ppo(
    env_id: str,
    steps: int,
    resolution: int,
    seed: int,
    eval_every: int,
    iter_eval: int,
    eval_episodes: int,
    quick: bool,
    device: str,
    log: Any = print,
) -> SideResult:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    curve: list[tuple[int, float]] = []
    start = time.perf_counter()

    class Periodic(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next = eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += eval_every
                rets = evaluate_sb3(self.model, env_id, resolution, iter_eval, seed + 1_000_000 + self.num_timesteps)
                curve.append((self.num_timesteps, float(np.mean(rets))))
                log(
                    f"  ppo       real steps {self.num_timesteps:>6}/{steps}  eval return {curve[-1][1]:8.1f}  "
                    f"{time.perf_counter() - start:6.0f}s"
                )
            return True

    venv = VecTransposeImage(VecFrameStack(DummyVecEnv([lambda: pixel_env(env_id, resolution)]), 4))
    venv.seed(seed)
    n_steps = 128 if quick else 512
    model = PPO(
        "CnnPolicy",
        venv,
        n_steps=n_steps,
        batch_size=64,
        n_epochs=4,
        learning_rate=2.5e-4,
        seed=seed,
        device=device,
        verbose=0,
    )
    model.learn(total_timesteps=steps, callback=Periodic())
    venv.close()
    final = evaluate_sb3(model, env_id, resolution, eval_episodes, FRESH_SEED)
    return SideResult("SB3 PPO CnnPolicy", final, curve, time.perf_counter() - start, {"n_steps": n_steps})


# ------------------------------------------------------------------------------------------------ main


def report(env_id: str, steps: int, ours: SideResult, ppo: SideResult) -> str:
    thresholds = THRESHOLDS.get(env_id, ())
    lines = [f"{env_id}, {steps} real steps, final evaluation: {len(ours.final_returns)} episodes on fresh seeds", ""]
    head = f"{'':<20} {'mean return':>12} {'std':>7} " + " ".join(
        f"{'steps to ' + str(int(t)):>14}" for t in thresholds
    )
    lines += [head + f" {'wall s':>8}", "-" * (len(head) + 9)]
    for side in (ours, ppo):
        reach = " ".join(f"{str(first_reaching(side.curve, t) or '-'):>14}" for t in thresholds)
        lines.append(
            f"{side.name:<20} {side.mean:>12.1f} {np.std(side.final_returns):>7.1f} {reach} {side.seconds:>8.0f}"
        )
    ratio = efficiency_ratio(ppo, ours, thresholds)
    lines.append("")
    lines.append(
        f"sample-efficiency ratio (PPO steps / worldloom steps to {int(ratio[0])}): {ratio[1]:.2f}"
        if ratio
        else "sample-efficiency ratio: n/a (no threshold reached by both)"
    )
    lines.append(f"worldloom: {json.dumps(ours.notes)}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="CartPole-v1", choices=sorted(THRESHOLDS))
    ap.add_argument("--steps", type=int, default=None, help="real-step budget (default 30000; --quick 1500)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--eval-episodes", type=int, default=20, help="final evaluation episodes (fresh seeds)")
    ap.add_argument(
        "--iter-eval", type=int, default=None, help="episodes per periodic evaluation (default 5; --quick 2)"
    )
    ap.add_argument(
        "--eval-every",
        type=int,
        default=1000,
        help="PPO: real steps between periodic evaluations (worldloom evaluates after each iteration)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: the real env is single-threaded, and more threads on a shared machine only contend)",
    )
    ap.add_argument("--family", default="diffusion", choices=["ar", "diffusion"], help="the new world model's")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="a smoke-sized run (~1-2 minutes)")
    ap.add_argument("--skip-ppo", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (1500 if args.quick else 30_000)
    iter_eval = args.iter_eval or (2 if args.quick else 5)
    eval_episodes = 3 if args.quick and args.eval_episodes == 20 else args.eval_episodes
    eval_every = 500 if args.quick else args.eval_every
    print(
        f"{args.env} from {args.resolution}x{args.resolution} pixels, {steps} real steps, seed {args.seed}, "
        f"torch threads {args.threads}, device {args.device}{' (quick)' if args.quick else ''}",
        flush=True,
    )
    req = experiment_request(
        args.env, steps, args.resolution, args.seed, args.quick, iter_eval, args.device, args.family
    )
    with tempfile.TemporaryDirectory(prefix="wl-bench-rl-") as tmp:
        ours = run_worldloom(req, eval_episodes, Path(tmp), log=lambda m: print(m, flush=True))
    if args.skip_ppo:
        ppo = SideResult("SB3 PPO CnnPolicy", [float("nan")], [], 0.0)
    else:
        ppo = run_ppo(
            args.env,
            steps,
            args.resolution,
            args.seed,
            eval_every,
            iter_eval,
            eval_episodes,
            args.quick,
            args.device,
            log=lambda m: print(m, flush=True),
        )
    print()
    print(report(args.env, steps, ours, ppo))


if __name__ == "__main__":
    main()
