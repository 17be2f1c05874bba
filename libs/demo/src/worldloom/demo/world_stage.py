"""Stage 5 of `make demo`: a tiny world model of each family on simulator episodes, through the services.

1. The ingest service records random-policy Pendulum-v1 episodes (frames + per-step actions and rewards).
2. The curate service curates them as they arrive (videos.ingested) with its profile for simulator
   sources: the default filters would reject a white background as "overexposed" and near-identical
   episodes as duplicates.
3. The active (continuous) demo tokenizer encodes the accepted episodes; a small FSQ tokenizer is trained
   on them for the autoregressive model and activated (the tokenize service backfills every clip).
4. The train service pretrains a tiny diffusion and a tiny AR model, action-conditioned, and scores them
   on held-out episodes against the copy-last-frame baseline.
5. The demo draws predicted-vs-real GIFs for held-out episodes and a PSNR-by-horizon plot.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.cli.tokenizer_cmd import follow_training, latest
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import TRAIN_RENDITION, ClipRecord
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.demo.clips import (
    DEMO_ENCODE_MAX_FRAMES,
    accepted_clips,
    heldout_clips,
    wait_for_curation,
    wait_for_tokens,
)
from worldloom.demo.plots import plot_lines, write_grid_gif

ENV, EPISODES, EPISODE_STEPS = "Pendulum-v1", 24, 96
#: training steps per family (tiny models: about 0.1 s (diffusion) and 0.25 s (AR) a step on 2 CPU cores)
DEFAULT_WORLD_STEPS = {"diffusion": 1200, "ar": 400}
DISCRETE_TOKENIZER_STEPS = 120
CONTEXT, HORIZONS = 2, [1, 2, 4]  # latent frames: 2 = video frames 0-4; horizon 4 = video frames 13-16
PRED_GIF, PSNR_PNG = "world_predictions.gif", "world_psnr_by_horizon.png"
COLOURS = {"ar": (31, 119, 180), "diffusion": (214, 39, 40), "copy_last": (120, 120, 120)}
#: learning rate per family (the AR head's cross-entropy tolerates a higher rate than flow matching)
LR = {"ar": 1e-3, "diffusion": 5e-4}


def world_stage(stack: ExitStack, store: LocalStore, bus: InProcessBus, store_settings: StoreSettings,
                http: HttpSettings, token: str, ingest_url: str, tokenize: WorldloomClient,
                continuous_id: str, clips_before: int, out: Path, console: Console,
                steps: dict[str, int] | None = None) -> dict[str, Any]:
    from worldloom.curate.config import SIMULATOR_PROFILE, config_with
    from worldloom.train.app import build_app as build_train
    from worldloom.train.settings import TrainSettings

    steps = {**DEFAULT_WORLD_STEPS, **(steps or {})}
    section: dict[str, Any] = {"env": ENV, "context_frames": CONTEXT, "horizons": HORIZONS}
    try:
        with WorldloomClient(ingest_url, token) as ingest:
            video_ids = _record_episodes(ingest, console)
        config_hash = config_with(SIMULATOR_PROFILE).config_hash(None)  # the curate service's gymnasium profile
        wait_for_curation(store, video_ids, config_hash, console)
        clips = accepted_clips(store, config_hash)
        console.print(f"{len(clips)}/{len(video_ids)} episodes accepted by the curate service's simulator profile "
                      f"(config {config_hash}; the default profile rejects rendered white backgrounds)")
        section.update({"episodes": len(video_ids), "config_hash": config_hash, "episodes_accepted": len(clips)})
        if len(clips) < 4:
            raise ApiFailure(422, "too_few_episodes", f"only {len(clips)} episodes passed curation")
        total = clips_before + len(clips)
        console.print(f"the active tokenizer {continuous_id} encodes the new clips (clips.curated)")
        wait_for_tokens(store, continuous_id, total, console)
        discrete_id = _discrete_tokenizer(tokenize, config_hash, console)
        tokenize.activate_tokenizer(discrete_id)
        section["discrete_tokenizer"] = discrete_id
        section["clips_tokenized_discrete"] = wait_for_tokens(store, discrete_id, total, console)
    except ApiFailure as exc:
        console.print(f"[red]simulator episodes / discrete tokenizer failed: {exc}")
        return {**section, "error": str(exc)}
    settings = TrainSettings(store=store_settings, http=http, training={"in_process": True})
    server = stack.enter_context(BackgroundServer(build_train(settings, store=store, bus=bus)))
    console.print(f"train API {server.url} (training in-process; a deployment trains on Ray)")
    models: dict[str, dict[str, Any]] = {}
    with WorldloomClient(server.url, token) as client:
        try:
            for family, tid in (("diffusion", continuous_id), ("ar", discrete_id)):
                models[family] = _train(client, family, tid, config_hash, steps[family], console)
        except ApiFailure as exc:
            console.print(f"[red]world-model training failed: {exc}")
            section["error"] = str(exc)
    section["models"] = models
    done = {f: m for f, m in models.items() if m.get("state") == "succeeded"}
    files: dict[str, str] = {}
    if done:
        if psnr_plot(done, out / PSNR_PNG):
            files["psnr_png"] = PSNR_PNG
        rows, section["gif_clips"] = prediction_rows(store, done, clips)
        if rows:
            write_grid_gif(rows, ["real", *[f"{f} predicted" for f in done]], out / PRED_GIF, zoom=2, fps=8.0)
            files["predictions_gif"] = PRED_GIF
    section["files"] = files
    return section


def poll_job(fetch: Callable[[], dict[str, Any]], percent: Callable[[dict[str, Any]], float], label: str,
          console: Console, timeout_s: float = 900.0) -> dict[str, Any]:
    """Polls a service job with a progress bar until it succeeds (returned) or fails (ApiFailure)."""
    columns = (TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn())
    deadline = time.monotonic() + timeout_s
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=100)
        while True:
            job = fetch()
            progress.update(task, completed=percent(job))
            if job["state"] == "succeeded":
                return job
            if job["state"] == "failed" or time.monotonic() > deadline:
                raise ApiFailure(500, "job_failed", f"{label}: {job['state']} {job.get('error') or job.get('errors')}")
            time.sleep(0.5)


def _record_episodes(client: WorldloomClient, console: Console) -> list[str]:
    job = client.start_gymnasium({"env": ENV, "episodes": EPISODES, "max_steps": EPISODE_STEPS, "seed": 0,
                                  "policy": "random"})
    job = poll_job(lambda: client.source_job(job["job_id"]), lambda j: j["percent"],
                f"recording {EPISODES} {ENV} episodes", console)
    console.print(f"{len(job['video_ids'])} episodes of {EPISODE_STEPS + 1} frames ingested with actions and rewards "
                  f"(source job {job['job_id']})")
    return list(job["video_ids"])


def _discrete_tokenizer(client: WorldloomClient, config_hash: str, console: Console) -> str:
    body = {"name": "demo-tiny-discrete", "clips": {"config_hash": config_hash}, "kind": "discrete", "size": "tiny",
            "compression": "4x8x8", "fsq_levels": [8, 5, 5, 5], "resolution": 64, "frames": 17,
            "steps": DISCRETE_TOKENIZER_STEPS, "batch": 4, "log_every": 5, "checkpoint_every": DISCRETE_TOKENIZER_STEPS,
            "val_fraction": 0.1, "seed": 0}
    record = client.train_tokenizer(body)
    tid = record["tokenizer_id"]
    console.print(f"training [bold]{tid}[/] (discrete FSQ 8,5,5,5 = 1000 codes, tiny 4x8x8, {body['steps']} steps) "
                  "on the episodes, for the autoregressive model")
    record = follow_training(client, tid, console, record=record)
    if record["state"] != "succeeded":
        raise ApiFailure(500, "tokenizer_failed", f"discrete tokenizer {record['state']}: {record.get('error')}")
    console.print(f"held-out PSNR {record['metrics'].get('val_psnr', float('nan')):.2f} dB, code usage "
                  f"{100 * record['metrics'].get('val_code_usage', float('nan')):.1f}%")
    return tid


def _train(client: WorldloomClient, family: str, tokenizer_id: str, config_hash: str, steps: int,
           console: Console) -> dict[str, Any]:
    body = {"name": f"demo-{family}", "family": family, "size": "tiny", "tokenizer_id": tokenizer_id,
            "clips": {"config_hash": config_hash}, "actions": True, "window": CONTEXT + max(HORIZONS),
            "context_frames": CONTEXT,
            "eval_horizons": HORIZONS, "steps": steps, "batch": 8, "lr": LR[family],
            "checkpoint_every": max(1, steps // 2), "log_every": max(1, steps // 50), "val_fraction": 0.15,
            "eval_steps": 10, "seed": 0}
    start = time.perf_counter()
    record = client.train_world_model(body)
    mid = record["model_id"]
    console.print(f"training [bold]{mid}[/] ({family}, tiny, {steps} steps, window {body['window']} latent frames) on "
                  f"{record['lineage']['train_clips']} episodes, {record['lineage']['val_clips']} held out")
    record = follow_training(client, mid, console, record=record, fetch=client.world_job)
    summary = {"model_id": mid, "state": record["state"], "steps": record["step"],
               "train_seconds": round(time.perf_counter() - start, 1), "final_loss": latest(record, "loss"),
               "metrics": record["metrics"], "lineage": record["lineage"], "throughput": record.get("throughput")}
    if record["state"] != "succeeded":
        console.print(f"[red]{family} training {record['state']}: {record.get('error')}")
        summary["error"] = record.get("error") or record["state"]
    return summary


def _by_horizon(metrics: dict[str, float], who: str, against: str = "real",
                metric: str = "psnr") -> list[tuple[int, float]]:
    """``[(h, value)]`` of ``who`` ("model" | "copy_last") against the real frames or the tokenizer's
    decoding of the real latents ("decoded": the dynamics alone, without the tokenizer's error); only the
    horizons the run measured."""
    values = ((h, metrics.get(f"val_{who}_h{h}_{metric}_vs_{against}")) for h in HORIZONS)
    return [(h, float(v)) for h, v in values if v is not None]


def psnr_series(models: dict[str, dict[str, Any]]) -> list[tuple[str, tuple[int, int, int], bool, list[tuple[int, float]]]]:
    """The plot's lines against the real frames: each family, and copy-last-frame once (grey) when every
    family's job scored the same held-out frames (the same baseline figures), else once per family."""
    Series = tuple[str, tuple[int, int, int], bool, list[tuple[int, float]]]
    lines: list[Series] = [(f"{f} model", COLOURS[f], False, _by_horizon(m["metrics"], "model"))
                           for f, m in models.items()]
    copies = {f: _by_horizon(m["metrics"], "copy_last") for f, m in models.items()}
    if len({tuple(c) for c in copies.values()}) == 1:
        lines.append(("copy-last frame", COLOURS["copy_last"], True, next(iter(copies.values()))))
    else:
        lines += [(f"copy-last frame ({f})", COLOURS[f], True, c) for f, c in copies.items()]
    return [s for s in lines if s[3]]


def psnr_plot(models: dict[str, dict[str, Any]], path: Path) -> bool:
    """The PSNR-by-horizon PNG against the real frames; False (nothing written) when the run measured none."""
    series = psnr_series(models)
    if not series:
        return False
    plot_lines(series, path, title="held-out prediction PSNR against the real frames",
               x_label="horizon h (the h-th block of 4 video frames after the context)", y_label="PSNR (dB)")
    return True


def prediction_rows(store: LocalStore, models: dict[str, dict[str, Any]], clips: list[ClipRecord],
                 n: int = 3, record: dict[str, Any] | None = None,
                 without_actions: frozenset[str] = frozenset()) -> tuple[list[list[np.ndarray]], list[str]]:
    """For up to ``n`` of the episodes ``record``'s job held out: real frames, then each model's prediction
    (context + future, decoded by its tokenizer, given the episode's recorded actions, except for the
    models named in ``without_actions``), all ``[T, 64, 64, 3]`` uint8."""
    from worldloom.core.catalog import token_shard_key
    from worldloom.models.world import Sampling
    from worldloom.models.world.data import Pool, load_sequences
    from worldloom.models.world.registry import load_world_model
    from worldloom.tokenize.codec import square_frames

    loaded = {f: load_world_model(store, m["model_id"]) for f, m in models.items()}
    need = CONTEXT + max(HORIZONS)
    any_record = record or {"request": {"val_fraction": 0.15}}
    rows: list[list[np.ndarray]] = []
    chosen: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wl-demo-wm-") as tmp:
        for clip, split in heldout_clips(clips, any_record, n=len(clips)):
            if split != "held out" or len(rows) >= n:
                continue
            preds = []
            for label, lw in loaded.items():
                spec = None if label in without_actions else lw.model.config.action
                pool: Pool | None = None if spec is None else ("mean" if spec.kind == "continuous" else "last")
                seqs = load_sequences(store, [token_shard_key(lw.record.lineage.tokenizer_id, clip.clip_id)],
                                      actions=pool)
                if not seqs or seqs[0].frames < need:
                    break
                x, a = seqs[0].window(0, need)
                ctx = lw.model.take_frames(x[None], 0, CONTEXT)
                with torch.no_grad():
                    pred = lw.model.rollout(ctx, max(HORIZONS), actions=None if a is None else a[None],
                                            sampling=Sampling(temperature=0.0, steps=10),
                                            generator=torch.Generator().manual_seed(0))
                    video = lw.model.decode_latents(lw.tokenizer, pred).clamp(-1, 1)
                frames = ((video[0].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()
                preds.append(mark_predicted(frames, 1 + (CONTEXT - 1) * lw.tokenizer.config.t_compression))
            if len(preds) != len(loaded):
                continue
            path = Path(tmp) / f"{clip.clip_id}.mp4"
            store.download(clip.renditions[TRAIN_RENDITION], str(path))
            real = square_frames(path, preds[0].shape[1], DEMO_ENCODE_MAX_FRAMES)[: len(preds[0])]
            rows.append([real, *preds])
            chosen.append(clip.clip_id)
    return rows, chosen


def mark_predicted(frames: np.ndarray, first: int) -> np.ndarray:
    """A red 1-pixel frame around every predicted (not given) frame, so the GIF shows where prediction starts."""
    out = frames.copy()
    for edge in (np.s_[first:, :1], np.s_[first:, -1:], np.s_[first:, :, :1], np.s_[first:, :, -1:]):
        out[edge] = (230, 30, 30)
    return out


#: the headline table's rows: metric key, label, format. Foreground PSNR scores the pixels that differ from
#: the episode's median background (the rod), where a blank or frozen prediction cannot hide behind the
#: white background (see worldloom.models.tokenizer.metrics.foreground_psnr)
HEADLINE = (("psnr", "PSNR dB", "{:.2f}"), ("fg_psnr", "fg PSNR dB", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"))
#: what "beats copy-last" means in the verdict line (issue 11: a clear margin, >= 1 dB)
MARGIN_DB = 1.0


def world_summary(section: dict[str, Any], out: Path, console: Console) -> None:
    """The headline: each family against the real held-out frames next to copy-last-frame (PSNR, foreground
    PSNR, SSIM), the verdicts in PSNR and in foreground PSNR, the action gain, then the same against the
    tokenizer's decoding of the real future as a secondary, labelled line. Every figure is one this run's
    training job measured; a horizon it did not measure shows "-"."""
    table = Table(title=f"world models on {section.get('env', ENV)}: held-out episodes against the real frames, "
                        f"model / copy-last-frame, {CONTEXT} context latent frames", title_justify="left")
    for col in ("model", "steps", "train s", "metric", *[f"h{h}" for h in HORIZONS]):
        table.add_column(col, justify="left" if col in ("model", "metric") else "right")
    verdicts, secondary = [], []
    for family, m in (section.get("models") or {}).items():
        if m.get("state") != "succeeded":
            table.add_row(f"{family} {m.get('model_id', '')}", "-", "-", "-", f"[red]{m.get('error')}")
            continue
        for i, (metric, label, fmt) in enumerate(HEADLINE):
            model = dict(_by_horizon(m["metrics"], "model", "real", metric))
            copy = dict(_by_horizon(m["metrics"], "copy_last", "real", metric))
            cells = [f"{fmt.format(model[h])} / {fmt.format(copy[h])}" if h in model and h in copy else "-"
                     for h in HORIZONS]
            table.add_row(f"{family} {m['model_id']}" if i == 0 else "", str(m["steps"]) if i == 0 else "",
                          f"{m['train_seconds']:.0f}" if i == 0 else "", label, *cells)
        verdicts.append(_verdict(family, m["metrics"]))
        if _by_horizon(m["metrics"], "model"):  # scored against the real frames: the foreground too
            verdicts.append(_verdict(family, m["metrics"], "fg_psnr", "foreground PSNR"))
        gains = _action_gains(m["metrics"])
        if gains:
            verdicts.append(f"{family}: action gain (PSNR with the true actions minus with shuffled actions, against "
                            f"the real frames): {', '.join(f'h{h} {g:+.2f}' for h, g in gains)} dB")
        dm, dc = dict(_by_horizon(m["metrics"], "model", "decoded")), dict(_by_horizon(m["metrics"], "copy_last", "decoded"))
        decoded = [f"h{h} {dm[h]:.2f} / {dc[h]:.2f}" for h in HORIZONS if h in dm and h in dc]
        if decoded:
            secondary.append(f"{family}: {', '.join(decoded)}")
    console.print(table)
    for line in verdicts:
        console.print(line)
    if secondary:
        console.print("[dim]secondary, against the tokenizer's decoding of the real future (the dynamics alone, "
                      "without the tokenizer's error; not what a user sees), PSNR dB model / copy-last:[/]")
        for line in secondary:
            console.print(f"[dim]  {line}[/]")
    for name in (section.get("files") or {}).values():
        console.print(f"file: {out / name}")


def _action_gains(metrics: dict[str, float]) -> list[tuple[int, float]]:
    """``[(h, dB)]``: the job's PSNR with the true actions minus with shuffled ones (only where it measured it)."""
    values = ((h, metrics.get(f"val_model_h{h}_action_gain_db")) for h in HORIZONS)
    return [(h, float(v)) for h, v in values if v is not None]


def _verdict(family: str, metrics: dict[str, float], metric: str = "psnr", label: str = "") -> str:
    """Where the model beats copy-last-frame against the real frames by MARGIN_DB or more in ``metric``, from
    this run's figures (``label`` names a metric other than whole-frame PSNR)."""
    model, copy = dict(_by_horizon(metrics, "model", metric=metric)), dict(_by_horizon(metrics, "copy_last", metric=metric))
    measured = [h for h in HORIZONS if h in model and h in copy]
    if label and not measured:
        return f"[yellow]{family} ({label}): not measured (no foreground pixel in the scored frames)"
    family = f"{family} ({label})" if label else family
    if not measured:
        return f"[yellow]{family}: not scored against the real frames in this run"
    margins = ", ".join(f"h{h} {model[h] - copy[h]:+.2f}" for h in measured)
    missing = "".join(f"; h{h} not measured" for h in HORIZONS if h not in measured)
    wins = [f"h{h}" for h in measured if model[h] - copy[h] >= MARGIN_DB]
    if len(wins) == len(HORIZONS):
        return f"[green]{family}: beats copy-last-frame by >= {MARGIN_DB:g} dB at every horizon ({margins} dB)"
    if wins:
        return (f"[yellow]{family}: beats copy-last-frame by >= {MARGIN_DB:g} dB at {', '.join(wins)} only "
                f"({margins} dB{missing})")
    return f"[red]{family}: does not beat copy-last-frame by {MARGIN_DB:g} dB at any horizon ({margins} dB{missing})"
