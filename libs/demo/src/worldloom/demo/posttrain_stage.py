"""Stage 6 of `make demo`: post-train the demo's diffusion world model on a new embodiment a search finds.

1. The ingest service records random-policy Acrobot-v1 episodes: a double pendulum driven by 3 discrete
   torques, a new embodiment for a model trained on Pendulum-v1's one continuous torque. The curate
   service curates them (simulator profile); the continuous tokenizer, activated again, backfills them.
2. The posttrain service runs a clip-id search (episodes like the first Acrobot one, that source only),
   saves the hits as a dataset version (the lineage records the query), gives the model a new action
   encoder (``resize_actions``: another kind, so the trunk is kept and the encoder starts at zero) and
   trains LoRA adapters in ``action`` mode.
3. The job scores the base (before) and the post-trained model (after) on held-out episodes against the
   real frames next to copy-last-frame; the demo prints that table and writes a real | before | after GIF.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.cli.tokenizer_cmd import follow_training
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import dataset_key
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.core.vectors import VectorIndex
from worldloom.demo.clips import accepted_clips, wait_for_curation, wait_for_tokens
from worldloom.demo.plots import write_grid_gif
from worldloom.demo.world_stage import poll_job, prediction_rows

ENV, EPISODES, EPISODE_STEPS = "Acrobot-v1", 12, 96
#: LoRA steps: about 0.1 s each for the tiny DiT on 2 cores; enough for the new action encoder to matter
DEFAULT_POSTTRAIN_STEPS = 300
HORIZONS = [1, 2, 4]
GIF = "posttrain_predictions.gif"


def posttrain_stage(stack: ExitStack, store: LocalStore, bus: InProcessBus, store_settings: StoreSettings,
                    http: HttpSettings, token: str, index: VectorIndex, ingest_url: str, tokenize: WorldloomClient,
                    continuous_id: str, clips_before: int, base: dict[str, Any], out: Path, console: Console,
                    steps: int = DEFAULT_POSTTRAIN_STEPS) -> dict[str, Any]:
    from worldloom.curate.config import SIMULATOR_PROFILE, config_with
    from worldloom.posttrain.app import build_app as build_posttrain
    from worldloom.posttrain.settings import PosttrainSettings

    section: dict[str, Any] = {"env": ENV, "base_model": base["model_id"], "horizons": HORIZONS}
    try:
        with WorldloomClient(ingest_url, token) as ingest:
            job = ingest.start_gymnasium({"env": ENV, "episodes": EPISODES, "max_steps": EPISODE_STEPS, "seed": 1,
                                          "policy": "random"})
            job = poll_job(lambda: ingest.source_job(job["job_id"]), lambda j: j["percent"],
                        f"recording {EPISODES} {ENV} episodes", console)
        video_ids = list(job["video_ids"])
        config_hash = config_with(SIMULATOR_PROFILE).config_hash(None)
        wait_for_curation(store, video_ids, config_hash, console)
        # the discrete tokenizer was active while they were curated: activating the continuous one again
        # backfills them (the videos of stage 1 and every simulator episode)
        tokenize.activate_tokenizer(continuous_id)
        wait_for_tokens(store, continuous_id, clips_before + len(accepted_clips(store, config_hash)), console)
        first = next(c for c in accepted_clips(store, config_hash) if c.video_id in set(video_ids))
    except (ApiFailure, StopIteration) as exc:
        console.print(f"[red]{ENV} episodes failed: {exc}")
        return {**section, "error": str(exc)}
    settings = PosttrainSettings(store=store_settings, http=http, training={"in_process": True})
    server = stack.enter_context(BackgroundServer(build_posttrain(settings, store=store, bus=bus, index=index)))
    console.print(f"posttrain API {server.url}")
    body = {"name": "demo-acrobot", "base_model": base["model_id"], "mode": "action", "method": "lora",
            "resize_actions": True, "lora": {"rank": 8, "alpha": 16},
            "search": {"clip_id": first.clip_id, "top_k": EPISODES, "filters": {"sources": [first.source]},
                       "save_as": "demo-acrobot-search"},
            "steps": steps, "batch": 8, "lr": 1e-3, "eval_horizons": HORIZONS, "val_fraction": 0.25,
            "checkpoint_every": steps, "log_every": max(1, steps // 50), "val_every": max(1, steps // 10), "seed": 0}
    start = time.perf_counter()
    try:
        with WorldloomClient(server.url, token) as client:
            record = client.posttrain(body)
            mid = record["model_id"]
            console.print(f"post-training [bold]{mid}[/] (LoRA rank 8, action mode: a new {ENV} action encoder on "
                          f"{base['model_id']}, {steps} steps) on the hits of a search for clips like {first.clip_id}, "
                          f"saved as {record['lineage']['datasets'][0]}")
            record = follow_training(client, mid, console, record=record, fetch=client.world_job)
    except ApiFailure as exc:
        console.print(f"[red]post-training failed: {exc}")
        return {**section, "error": str(exc)}
    section.update(model_id=mid, state=record["state"], steps=record["step"], metrics=record["metrics"],
                   lineage=record["lineage"], train_seconds=round(time.perf_counter() - start, 1))
    if record["state"] != "succeeded":
        return {**section, "error": record.get("error") or record["state"]}
    ids = set(json.loads(store.get_bytes(dataset_key("demo-acrobot-search", 1)))["clip_ids"])
    clips = [c for c in accepted_clips(store, config_hash) if c.clip_id in ids]
    models = {"before": {"model_id": base["model_id"]}, "after": {"model_id": mid}}
    rows, section["gif_clips"] = prediction_rows(store, models, clips, n=2, record=record,
                                              without_actions=frozenset({"before"}))
    if rows:
        write_grid_gif(rows, ["real", f"before ({base['model_id']})", f"after ({mid})"], out / GIF, zoom=2, fps=8.0)
        section["files"] = {"predictions_gif": GIF}
    return section


def posttrain_summary(section: dict[str, Any], out: Path, console: Console) -> None:
    """Before / after against the real held-out frames, next to copy-last-frame (figures the job measured)."""
    if section.get("error"):
        console.print(f"[red]post-training stage: {section['error']}")
        return
    m, lineage = section["metrics"], section["lineage"]
    query = lineage.get("dataset_query") or {}
    table = Table(title=f"post-training {section['model_id']} on {ENV} ({', '.join(lineage.get('datasets') or [])}, "
                        f"found by a search for clips like {query.get('clip_id')}): held-out episodes against the "
                        "real frames", title_justify="left")
    for col in ("model", "metric", *[f"h{h}" for h in HORIZONS]):
        table.add_column(col, justify="left" if col in ("model", "metric") else "right")
    for label, prefix in (("before (base, no actions)", "base_val"), ("after (LoRA)", "val"),
                          ("copy-last frame", "val_copy_last")):
        for metric in ("psnr", "ssim"):
            cells = []
            for h in HORIZONS:
                key = (f"{prefix}_h{h}_{metric}_vs_real" if prefix == "val_copy_last"
                       else f"{prefix}_model_h{h}_{metric}_vs_real")
                cells.append(f"{m[key]:.3f}" if metric == "ssim" and key in m else
                             f"{m[key]:.2f}" if key in m else "-")
            table.add_row(label if metric == "psnr" else "", "PSNR dB" if metric == "psnr" else "SSIM", *cells)
    console.print(table)
    if "base_val_loss" in m and "val_loss" in m:
        console.print(f"held-out loss {m['base_val_loss']:.4f} before -> {m['val_loss']:.4f} after "
                      f"({section['steps']} steps, {section['train_seconds']:.0f} s)")
    for name in (section.get("files") or {}).values():
        console.print(f"file: {out / name}")
