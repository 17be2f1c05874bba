"""Stage 7 of `make demo`: a short closed-loop RL experiment through the rlsim service.

The rlsim service acts in CartPole-v1 seen only as 32x32 pixels: random warm-up episodes, then per
iteration a world-model update, actor-critic training in the world model's imagination and a real
evaluation on fresh seeds; every real episode is ingested as a video with its actions and rewards (the
curate service picks them up like any other). A few minutes of CPU is far from a solve (that is
``bench/bench_rl_cartpole.py``); the demo shows the loop, its learning curve (real vs imagined return) and a
real | imagined GIF: the world model rolled out from the first frames of a real episode with that
episode's actions, next to what really happened.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.demo.plots import plot_lines, write_grid_gif
from worldloom.demo.world_stage import mark_predicted, poll_job

ENV, RESOLUTION, REAL_STEPS = "CartPole-v1", 32, 1500
CURVE_PNG, GIF = "rl_learning_curve.png", "rl_real_vs_imagined.gif"
#: latent frames the world model is given before it imagines on its own (4 video frames each; random
#: CartPole episodes last about 22 steps, so the GIF shows one of the longer ones)
CONTEXT, IMAGINED = 3, 4


def experiment_body(steps: int = REAL_STEPS) -> dict[str, Any]:
    """A smoke-sized experiment (about a minute of CPU): tiny tokenizer and diffusion world model."""
    return {"name": "demo-cartpole", "env_id": ENV, "resolution": RESOLUTION, "steps": steps,
            "warmup_steps": min(steps, 500), "steps_per_iteration": 500, "eval_episodes": 2, "seed": 0,
            "world_model": {"family": "diffusion", "size": "tiny", "config": {"n_layer": 2, "d_model": 64, "n_head": 2},
                            "tokenizer": {"size": "tiny", "channels": 16, "steps": 40, "batch": 4},
                            "window": 4, "context_frames": CONTEXT, "updates": 40, "batch": 8, "sampling_steps": 2},
            "agent": {"hidden": 64, "layers": 2, "updates": 30, "imagined_envs": 16, "horizon": 10,
                      "imagined_episode_steps": 50}}


def rl_stage(stack: ExitStack, store: LocalStore, bus: InProcessBus, store_settings: StoreSettings,
             http: HttpSettings, token: str, out: Path, console: Console, steps: int = REAL_STEPS) -> dict[str, Any]:
    from worldloom.rlsim.app import build_app as build_rlsim
    from worldloom.rlsim.settings import RlsimSettings

    server = stack.enter_context(BackgroundServer(build_rlsim(RlsimSettings(store=store_settings, http=http),
                                                              store=store, bus=bus)))
    console.print(f"rlsim API {server.url} (experiments run in the service process)")
    section: dict[str, Any] = {"env": ENV, "resolution": RESOLUTION, "steps": steps}
    start = time.perf_counter()
    try:
        with WorldloomClient(server.url, token) as client:
            record = client.start_experiment(experiment_body(steps))
            eid = record["experiment_id"]
            console.print(f"experiment [bold]{eid}[/]: {ENV} from {RESOLUTION}x{RESOLUTION} pixels, {steps} real steps")
            record = poll_job(lambda: client.experiment(eid), lambda r: float(r.get("percent") or 0.0),
                              f"experiment {eid}", console)
            policy_id = (record.get("lineage") or {}).get("policy_id")
            episodes: list[str] = []
            if policy_id:
                section["evaluation"] = client.evaluate_policy(policy_id, {"episodes": 5, "video": False})
                episodes = list(client.policy(policy_id)["lineage"].get("video_ids") or [])
    except ApiFailure as exc:
        console.print(f"[red]RL experiment failed: {exc}")
        return {**section, "error": str(exc)}
    section.update(experiment_id=eid, state=record["state"], metrics=record.get("metrics") or {},
                   lineage=record.get("lineage") or {}, curves=record.get("curves") or {},
                   seconds=round(time.perf_counter() - start, 1))
    files: dict[str, str] = {}
    if learning_curve(section["curves"], out / CURVE_PNG):
        files["curve_png"] = CURVE_PNG
    row = real_vs_imagined(store, eid, episodes[::-1]) if episodes else None
    if row is not None:
        write_grid_gif([row], ["real", "imagined"], out / GIF, zoom=4, fps=8.0)
        files["gif"] = GIF
    section["files"] = files
    return section


def learning_curve(curves: dict[str, list[list[float]]], path: Path) -> bool:
    """Real (evaluation) and imagined returns against real steps used, as a PNG; False when nothing was logged."""
    series = [(label, colour, dashed, [(float(x), float(y)) for x, y in curves.get(name) or []])
              for name, label, colour, dashed in (("real_return", "real return (fresh seeds)", (214, 39, 40), False),
                                                  ("imagined_return", "imagined return", (31, 119, 180), True))]
    series = [s for s in series if s[3]]
    if not series:
        return False
    plot_lines(series, path, title=f"{ENV} from {RESOLUTION}px pixels: return by real steps used",
               x_label="real environment steps", y_label="episode return")
    return True


def real_vs_imagined(store: LocalStore, experiment_id: str, video_ids: list[str]) -> list[np.ndarray] | None:
    """``[real, imagined]`` frames ``[T, R, R, 3]`` of the first ingested episode of ``video_ids`` long enough:
    the world model continues its first ``CONTEXT`` latent frames with the episode's own actions."""
    from worldloom.core.catalog import VideoRecord, raw_meta_key
    from worldloom.models.rl.real import episode_sequence
    from worldloom.models.world.data import load_episode_arrays
    from worldloom.rlsim.loop import load_experiment_models
    from worldloom.video.decode import read_frames

    model, tokenizer = load_experiment_models(store, experiment_id)
    need = CONTEXT + IMAGINED
    for video_id in video_ids:
        arrays = load_episode_arrays(store, video_id)
        if arrays is None or len(arrays["actions"]) < need * int(tokenizer.config.t_compression):
            continue
        record = store.get_record(raw_meta_key(video_id), VideoRecord)
        with tempfile.TemporaryDirectory(prefix="wl-demo-rl-") as tmp:
            path = Path(tmp) / "episode.mp4"
            store.download(store.key_from_uri(record.uri), str(path))
            frames, _ = read_frames(path, size=(RESOLUTION, RESOLUTION))
        seq = episode_sequence(model, tokenizer, frames, arrays["actions"], arrays["rewards"],
                               arrays.get("terminated", np.zeros(len(arrays["rewards"]), bool)), video_id=video_id)
        if seq is not None and seq.frames >= need:
            return _side_by_side(model, tokenizer, seq, frames)
    return None


def _side_by_side(model: Any, tokenizer: Any, seq: Any, frames: np.ndarray) -> list[np.ndarray]:
    need = CONTEXT + IMAGINED
    from worldloom.models.world import Sampling

    x, a = seq.window(0, need)
    with torch.no_grad():
        ctx = model.take_frames(x[None], 0, CONTEXT)
        latents = model.rollout(ctx, IMAGINED, actions=None if a is None else a[None],
                                sampling=Sampling(steps=4), generator=torch.Generator().manual_seed(0))
        video = model.decode_latents(tokenizer, latents).clamp(-1, 1)
    imagined = ((video[0].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()
    first = 1 + (CONTEXT - 1) * int(tokenizer.config.t_compression)
    return [frames[: len(imagined)], mark_predicted(imagined, first)]


def rl_summary(section: dict[str, Any], out: Path, console: Console) -> None:
    """What the experiment measured: real steps, real and imagined returns, the policy's fresh-seed returns."""
    if section.get("error"):
        console.print(f"[red]RL stage: {section['error']}")
        return
    curves = section.get("curves") or {}
    table = Table(title=f"closed-loop RL {section['experiment_id']} on {ENV} from {RESOLUTION}px pixels "
                        f"({section['state']}, {section['seconds']:.0f} s)", title_justify="left")
    table.add_column("real steps", justify="right")
    table.add_column("real return (fresh seeds)", justify="right")
    table.add_column("imagined return", justify="right")
    imagined = dict((int(x), float(y)) for x, y in curves.get("imagined_return") or [])
    for x, y in curves.get("real_return") or []:
        table.add_row(f"{int(x)}", f"{float(y):.1f}", f"{imagined[int(x)]:.1f}" if int(x) in imagined else "-")
    console.print(table)
    ev = section.get("evaluation") or {}
    if ev.get("returns"):
        console.print(f"policy {section['lineage'].get('policy_id')}: {len(ev['returns'])} real episodes on unseen "
                      f"seeds, mean return {float(np.mean(ev['returns'])):.1f} (random play scores about 22; the "
                      f"solve, >= 450, is bench/bench_rl_cartpole.py's)")
    for name in (section.get("files") or {}).values():
        console.print(f"file: {out / name}")
