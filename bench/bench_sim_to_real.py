"""Sim-to-real on Bridge (issue 12): a base world model pretrained on simulated arms, post-trained on 10 real
BridgeData V2 episodes, scored on the 5 held-out val episodes against the real frames.

Every step goes through the real services, in one process like ``make demo`` (LocalStore, in-process bus,
each service's HTTP API on a loopback port, jobs in-process):

1. ingest records MuJoCo arm episodes at 64x64 through its simulator source (``POST /v1/sources/gymnasium``):
   Pusher-v5 (7 joint torques) and Reacher-v5 (2 torques), each with the scripted controller (noise 0.3)
   and the random policy; it also takes real video without actions (the Sintel trailer clip) and the Bridge
   folder the way ``worldloom ingest --episodes`` does (actions + instructions, ``split`` kept as an attribute).
2. curate curates them: the simulator profile for the arms (no motion filter: random arms barely move), a robot-episode profile for the uploads (one
   clip per video: no shot cuts, no near-duplicate removal across episodes of one kitchen; the profile is
   chosen by ingest source, so the Sintel upload gets it too: one 10 s clip, the tokenizer samples windows).
3. tokenize trains a continuous tiny 4x8x8 tokenizer on the **base corpus** (arms + Sintel; no Bridge clip)
   and activates it (every clip, Bridge included, is encoded once).
4. train pretrains a tiny action-conditioned diffusion base on the Pusher episodes (the base corpus' 7-d
   embodiment; the train service takes one action width per model, so Reacher only feeds the tokenizer).
5. posttrain post-trains it in ``action`` mode on the Bridge **train** episodes (a dataset of their clips)
   with the **val** episodes as the ``held_out`` dataset: full (+ the ``scratch`` baseline, same budget),
   LoRA and heads; each record has the before (base) / after / scratch figures per horizon against the real
   frames and against the tokenizer's decoding of the real future, copy-last-frame beside them.
6. a child process per method runs the job's own frozen plan (``posttrain_loop``) for a few steps to measure
   its peak memory: the peak RSS during the loop (``VmHWM``, reset to the current RSS through
   ``/proc/self/clear_refs`` just before it) minus the RSS before it, i.e. what the loop adds over the
   imported libraries: base weights, data, gradients, optimiser state and activations.

Prints one table (rows: base before, full, lora, heads, scratch, copy-last; PSNR / SSIM per horizon against
the real frames), the same against the tokenizer's decoding, the steps ratio from the two validation-loss
curves and the per-method costs; writes ``out/bench/sim_to_real.json`` and ``sim_to_real_val_loss.png``.

    .venv/bin/python bench/bench_sim_to_real.py [--quick] [--data ../shared/data] [--out out/bench]

``--quick`` is the same path with tiny budgets (a few minutes on 2 cores); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.curate.config import SIMULATOR_PROFILE

HORIZONS = [1, 2, 4]  # latent frames after the context; at 3 fps and 4x: ~1.3, 2.7 and 5.3 s ahead
CONTEXT, WINDOW = 2, 6
METHODS = ("full", "lora", "heads")
ROWS = ("base (before)", "full", "lora", "heads", "scratch", "copy-last frame")
#: the record's metric prefix of each row (copy-last: the full job's, every job scores the same frames)
PREFIX = {
    "base (before)": ("base_val_", "model"),
    "full": ("val_", "model"),
    "lora": ("val_", "model"),
    "heads": ("val_", "model"),
    "scratch": ("scratch_val_", "model"),
    "copy-last frame": ("val_", "copy_last"),
}
#: the job whose record each row is read from
SOURCE = {
    "base (before)": "full",
    "full": "full",
    "lora": "lora",
    "heads": "heads",
    "scratch": "full",
    "copy-last frame": "full",
}
#: one clip per robot episode (no cut inside an episode: at 3 fps an arm's motion scores like a cut), and
#: episodes of one kitchen are alike by design (near-duplicate removal would keep one)
ROBOT_EPISODE_PROFILE: dict[str, Any] = {
    "split": {"threshold": 255.0, "min_clip_s": 1.0, "max_clip_s": 60.0, "trim_s": 0.0},
    "dedup": {"max_phash_distance": 0, "semantic_threshold": 1.0, "against_index": False},
}


#: the simulator profile plus: a random policy's arm barely moves (the motion filter would keep only the
#: scripted episodes) and a Reacher-v5 episode is 1 s at 50 fps (no trimmed ends, shorter clips allowed)
ARM_PROFILE: dict[str, Any] = {
    **SIMULATOR_PROFILE,
    "filters": {**SIMULATOR_PROFILE["filters"], "min_motion": None, "min_duration_s": 0.5},
    "split": {"min_clip_s": 0.5, "trim_s": 0.0},
}


@dataclass(frozen=True)
class Budget:
    """Everything the run's size depends on."""

    pusher: tuple[int, int]  # episodes (scripted, random)
    reacher: tuple[int, int]
    pusher_steps: int
    reacher_steps: int
    tokenizer_steps: int
    base_steps: int
    post_steps: int
    val_every: int
    probe_steps: int
    lr: dict[str, float]


FULL = Budget(
    pusher=(12, 8),
    reacher=(6, 4),
    pusher_steps=80,
    reacher_steps=50,
    tokenizer_steps=400,
    base_steps=2500,
    post_steps=600,
    val_every=20,
    probe_steps=20,
    lr={"base": 5e-4, "full": 5e-4, "lora": 1e-3, "heads": 1e-3},
)
QUICK = Budget(
    pusher=(2, 2),
    reacher=(1, 1),
    pusher_steps=24,
    reacher_steps=20,
    tokenizer_steps=6,
    base_steps=12,
    post_steps=8,
    val_every=4,
    probe_steps=3,
    lr={"base": 5e-4, "full": 5e-4, "lora": 1e-3, "heads": 1e-3},
)


# ------------------------------------------------------------------------------------------ figures


def metric(record: dict[str, Any], row: str, h: int, figure: str, against: str = "real") -> float | None:
    """One cell: the row's ``figure`` ("psnr" | "ssim") at horizon ``h`` from its job's metrics."""
    prefix, who = PREFIX[row]
    value = (record.get("metrics") or {}).get(f"{prefix}{who}_h{h}_{figure}_vs_{against}")
    return None if value is None else float(value)


def quality_rows(records: dict[str, dict[str, Any]], against: str = "real") -> list[list[str]]:
    """``[row, h1 PSNR, h1 SSIM, h2 ..., h4 ...]`` for the rows whose job ran; "-" where not measured."""
    out = []
    for row in ROWS:
        rec = records.get(SOURCE[row])
        if rec is None:
            continue
        cells = [row]
        for h in HORIZONS:
            p, s = metric(rec, row, h, "psnr", against), metric(rec, row, h, "ssim", against)
            cells += ["-" if p is None else f"{p:.2f}", "-" if s is None else f"{s:.3f}"]
        out.append(cells)
    return out


def markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def first_step_at(curve: Sequence[Sequence[float]], target: float) -> int | None:
    """The first step whose value is at or below ``target`` (None: never)."""
    for step, value in sorted((int(s), float(v)) for s, v in curve):
        if value <= target:
            return step
    return None


def ratio_to_reach(
    post: Sequence[Sequence[float]], scratch: Sequence[Sequence[float]], target: float
) -> dict[str, Any]:
    """Steps each curve needs to reach ``target`` and scratch / post-trained; when scratch never gets there
    within its curve the ratio is only bounded below (``ratio_lower_bound``: its last step / the
    post-trained steps), never invented."""
    p, s = first_step_at(post, target), first_step_at(scratch, target)
    out: dict[str, Any] = {"target": target, "posttrained_steps": p, "scratch_steps": s}
    if p is not None and s is not None:
        out["ratio"] = s / max(p, 1)
    elif p is not None and scratch:
        out["ratio_lower_bound"] = max(int(st) for st, _ in scratch) / max(p, 1)
    return out


def ratio_targets(post: Sequence[Sequence[float]], scratch: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """:func:`ratio_to_reach` for the post-trained curve's own values at 1/10, 1/4, 1/2 and all of its
    steps: how the saving changes with the loss asked for (early, the base's prior; late, the data)."""
    if not post:
        return []
    points = sorted((int(st), float(v)) for st, v in post)
    last = points[-1][0]
    out = []
    for frac in (0.1, 0.25, 0.5, 1.0):
        step, value = min(points, key=lambda p: abs(p[0] - frac * last))
        out.append({"at_step": step, **ratio_to_reach(post, scratch, value)})
    return out


def aims(records: dict[str, dict[str, Any]], ratio: dict[str, Any]) -> list[str]:
    """The issue's aims, each with its measured margins: post-trained (full) beats scratch and copy-last at
    every horizon (PSNR and SSIM against the real frames); scratch needs >= 2x the steps."""
    lines = []
    full = records.get("full")
    if full is not None:
        for other in ("scratch", "copy-last frame"):
            for figure, unit, fmt in (("psnr", " dB", "{:+.2f}"), ("ssim", "", "{:+.3f}")):
                margins = []
                for h in HORIZONS:
                    a, b = metric(full, "full", h, figure), metric(full, other, h, figure)
                    margins.append(None if a is None or b is None else a - b)
                shown = ", ".join(
                    f"h{h} " + ("-" if m is None else fmt.format(m)) for h, m in zip(HORIZONS, margins, strict=True)
                )
                met = all(m is not None and m > 0 for m in margins)
                lines.append(
                    f"{'MET' if met else 'MISSED'}: full post-trained vs {other}, {figure.upper()} "
                    f"against the real frames: {shown}{unit}"
                )
    value = ratio.get("ratio")
    if value is not None:
        lines.append(f"{'MET' if value >= 2 else 'MISSED'}: scratch needs {value:.2f}x the steps (aim >= 2x)")
    elif ratio.get("ratio_lower_bound") is not None:
        bound = ratio["ratio_lower_bound"]
        lines.append(
            f"{'MET' if bound >= 2 else 'UNDECIDED'}: scratch never reached the target within its budget: "
            f"ratio > {bound:.2f}x (aim >= 2x)"
        )
    else:
        lines.append("UNDECIDED: the post-trained model did not reach the target loss either")
    return lines


def mb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e6:.2f} MB"


# ------------------------------------------------------------------------------------------ services


def _poll(
    fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rec = fetch()
        if done(rec):
            return rec
        if time.monotonic() > deadline:
            raise ApiFailure(504, "timeout", f"{what} still {rec.get('state')} after {timeout_s:.0f}s")
        time.sleep(1.0)


def _job(client: WorldloomClient, record: dict[str, Any], console: Console, what: str) -> dict[str, Any]:
    from worldloom.cli.tokenizer_cmd import follow_training

    fetch = client.world_job if "model_id" in record else None
    rid = record.get("model_id") or record["tokenizer_id"]
    console.print(f"{what}: [bold]{rid}[/]")
    rec = follow_training(client, rid, console, record=record, fetch=fetch)
    if rec["state"] != "succeeded":
        raise ApiFailure(500, "job_failed", f"{what} {rid} {rec['state']}: {rec.get('error')}")
    return rec


def _record_sim(ingest: WorldloomClient, env: str, policy: str, episodes: int, steps: int, seed: int) -> list[str]:
    if episodes < 1:
        return []
    job = ingest.start_gymnasium(
        {
            "env": env,
            "episodes": episodes,
            "policy": policy,
            "seed": seed,
            "max_steps": steps,
            "env_kwargs": {"width": 64, "height": 64},
        }
    )
    job = _poll(
        lambda: ingest.source_job(job["job_id"]),
        lambda j: j["state"] in ("succeeded", "failed"),
        1800,
        f"{env} {policy}",
    )
    if job["state"] != "succeeded" or job.get("errors"):
        raise ApiFailure(500, "source_failed", f"{env} {policy}: {job['state']} {job.get('errors')}")
    return list(job["video_ids"])


def _accepted(store: Any, video_ids: Sequence[str], config_hash: str) -> list[Any]:
    from worldloom.core.catalog import TRAIN_RENDITION, curated_marker_key, read_clip

    clips = []
    for vid in video_ids:
        marker = json.loads(store.get_bytes(curated_marker_key(vid, config_hash)))
        for cid in marker["accepted"]:
            rec = read_clip(store, cid)
            if TRAIN_RENDITION in rec.renditions:
                clips.append(rec)
    return clips


def run(
    data: Path, out: Path, budget: Budget, console: Console, work: Path, tokenizer_bridge_train: bool = False
) -> dict[str, Any]:
    from worldloom.cli.episodes_cmd import load_episodes
    from worldloom.cli.ingest_cmd import upload_all
    from worldloom.core.bus.inprocess import InProcessBus
    from worldloom.core.catalog import TRAIN_RENDITION
    from worldloom.core.service.background import BackgroundServer
    from worldloom.core.settings import HttpSettings, StoreSettings, VectorSettings
    from worldloom.core.store.local import LocalStore
    from worldloom.core.vectors import VectorIndex
    from worldloom.curate.app import build_app as build_curate
    from worldloom.curate.config import config_with
    from worldloom.curate.settings import CurateSettings
    from worldloom.demo.clips import DEMO_ENCODE_MAX_FRAMES, wait_for_curation, wait_for_tokens
    from worldloom.ingest.app import build_app as build_ingest
    from worldloom.ingest.settings import IngestSettings
    from worldloom.posttrain.app import build_app as build_posttrain
    from worldloom.posttrain.settings import PosttrainSettings
    from worldloom.search.app import build_app as build_search
    from worldloom.search.settings import SearchSettings
    from worldloom.tokenize.app import build_app as build_tokenize
    from worldloom.tokenize.settings import TokenizeSettings
    from worldloom.train.app import build_app as build_train
    from worldloom.train.settings import TrainSettings

    t_start = time.perf_counter()
    token = secrets.token_urlsafe(16)
    http = HttpSettings(api_tokens=token)
    store_settings = StoreSettings(kind="local", root=work / "store")
    vectors = VectorSettings(uri=str((work / "vectors.db").resolve()))
    bus, store = InProcessBus(), LocalStore(store_settings.root)
    index = VectorIndex(vectors.uri)
    jobs = {"in_process": True, "max_steps": 100_000}
    report: dict[str, Any] = {
        "budget": asdict(budget),
        "horizons": HORIZONS,
        "context_frames": CONTEXT,
        "window": WINDOW,
        "timings_s": {},
    }

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        report["timings_s"][name] = round(now - since, 1)
        return now

    with ExitStack() as stack:

        def serve(app: Any) -> str:
            return str(stack.enter_context(BackgroundServer(app)).url)

        # curate picks a profile by the ingest source: "upload" is Bridge's and Sintel's (one clip each)
        profiles = {"gymnasium": ARM_PROFILE, "upload": ROBOT_EPISODE_PROFILE}
        ingest_url = serve(build_ingest(IngestSettings(store=store_settings, http=http), store=store, bus=bus))
        serve(
            build_curate(
                CurateSettings(store=store_settings, http=http, vectors=vectors, source_profiles=profiles),
                store=store,
                bus=bus,
                index=index,
            )
        )
        search_url = serve(
            build_search(
                SearchSettings(store=store_settings, http=http, vectors=vectors), store=store, bus=bus, index=index
            )
        )
        tokenize_url = serve(
            build_tokenize(
                TokenizeSettings(
                    store=store_settings, http=http, training=jobs, encode_max_frames=DEMO_ENCODE_MAX_FRAMES
                ),
                store=store,
                bus=bus,
            )
        )
        train_url = serve(
            build_train(TrainSettings(store=store_settings, http=http, training=jobs), store=store, bus=bus)
        )
        post_url = serve(
            build_posttrain(
                PosttrainSettings(store=store_settings, http=http, training=jobs), store=store, bus=bus, index=index
            )
        )
        ingest, search = WorldloomClient(ingest_url, token), WorldloomClient(search_url, token)
        tokenize, train = WorldloomClient(tokenize_url, token), WorldloomClient(train_url, token)
        post = WorldloomClient(post_url, token)
        for c in (ingest, search, tokenize, train, post):
            stack.callback(c.close)

        # 1-2. the base corpus (arms, Sintel) and Bridge, curated as they arrive
        console.rule("[bold]1. ingest + curate")
        t = time.perf_counter()
        sim: dict[str, list[str]] = {}
        for env, (scripted, rand), steps in (
            ("Pusher-v5", budget.pusher, budget.pusher_steps),
            ("Reacher-v5", budget.reacher, budget.reacher_steps),
        ):
            sim[env] = _record_sim(ingest, env, "scripted:0.3", scripted, steps, 0) + _record_sim(
                ingest, env, "random", rand, steps, 1000
            )
            console.print(
                f"{env}: {len(sim[env])} episodes of {steps + 1} frames (scripted:0.3 {scripted}, random {rand})"
            )
        videos = sorted((data / "video" / "sintel").glob("*.mp4"))
        sintel = [
            o.video_id
            for o in upload_all(ingest, videos, console, {v: {"dataset": "sintel"} for v in videos})
            if o.video_id
        ]
        uploads, refused = load_episodes(data / "bridge")
        if refused:
            raise ApiFailure(422, "bridge_refused", f"{[r.detail for r in refused]}")
        outcomes = upload_all(
            ingest,
            [u.video for u in uploads],
            console,
            {u.video: u.attributes for u in uploads},
            {u.video: u.arrays for u in uploads},
        )
        bridge = {"train": [], "val": []}
        for u, o in zip(uploads, outcomes, strict=True):
            if o.video_id is None:
                raise ApiFailure(422, "bridge_refused", f"{u.video}: {o.detail}")
            bridge[u.attributes["split"]].append(o.video_id)
        console.print(f"Bridge: {len(bridge['train'])} train + {len(bridge['val'])} val episodes with 7-d actions")
        hashes = {
            "sim": config_with(ARM_PROFILE).config_hash(None),
            "bridge": config_with(ROBOT_EPISODE_PROFILE).config_hash(None),
            "sintel": config_with(ROBOT_EPISODE_PROFILE).config_hash(None),
        }
        groups = {
            "sim": [v for vs in sim.values() for v in vs],
            "sintel": sintel,
            "bridge": bridge["train"] + bridge["val"],
        }
        for name, vids in groups.items():
            wait_for_curation(store, vids, hashes[name], console)
        clips = {name: _accepted(store, vids, hashes[name]) for name, vids in groups.items()}
        by_video: dict[str, list[Any]] = {}
        for rec in clips["bridge"]:
            by_video.setdefault(rec.video_id, []).append(rec)
        report["data"] = {
            "sim_episodes": {k: len(v) for k, v in sim.items()},
            "accepted_clips": {k: len(v) for k, v in clips.items()},
            "bridge_episodes_accepted": {s: sum(v in by_video for v in vids) for s, vids in bridge.items()},
        }
        console.print(
            f"accepted clips: {report['data']['accepted_clips']}; Bridge episodes accepted: "
            f"{report['data']['bridge_episodes_accepted']}"
        )
        t = lap("ingest_curate", t)

        # 3. the tokenizer on the base corpus only
        console.rule("[bold]2. tokenizer on the base corpus (arms + Sintel, no Bridge)")
        base_clips = [c.clip_id for c in clips["sim"] + clips["sintel"]]
        if tokenizer_bridge_train:  # the tokenizer only (pixels, no actions); the world-model base sees no Bridge
            base_clips += [c.clip_id for v in bridge["train"] for c in by_video.get(v, [])]
        report["tokenizer_data"] = "arms + sintel" + (" + bridge train frames" if tokenizer_bridge_train else "")
        search.create_dataset(
            {
                "name": "base-corpus",
                "clip_ids": base_clips,
                "description": "MuJoCo Pusher/Reacher episodes and the Sintel clip: no Bridge",
            }
        )
        for split in ("train", "val"):
            ids = [c.clip_id for v in bridge[split] for c in by_video.get(v, [])]
            search.create_dataset(
                {"name": f"bridge-{split}", "clip_ids": ids, "description": f"the Bridge {split} episodes' clips"}
            )
        steps = budget.tokenizer_steps
        tok = _job(
            tokenize,
            tokenize.train_tokenizer(
                {
                    "name": "sim2real-tok",
                    "dataset": {"name": "base-corpus"},
                    "kind": "continuous",
                    "size": "tiny",
                    "compression": "4x8x8",
                    "resolution": 64,
                    "frames": 17,
                    "steps": steps,
                    "batch": 4,
                    "log_every": max(1, steps // 50),
                    "checkpoint_every": max(1, steps // 2),
                    "val_fraction": 0.1,
                    "seed": 0,
                }
            ),
            console,
            "tokenizer",
        )
        tid = tok["tokenizer_id"]
        tokenize.activate_tokenizer(tid)
        total = sum(len(v) for v in clips.values())
        wait_for_tokens(store, tid, total, console)
        report["tokenizer"] = {
            "tokenizer_id": tid,
            "steps": tok["step"],
            "metrics": tok["metrics"],
            "train_clips": tok["lineage"]["train_clips"],
        }
        # the tokenizer's own error on the Bridge val episodes (what bounds every PSNR against the real frames)
        recon = []
        with tempfile.TemporaryDirectory(prefix="wl-s2r-") as tmp:
            for vid in bridge["val"]:
                for rec in by_video.get(vid, []):
                    path = Path(tmp) / f"{rec.clip_id}.mp4"
                    store.download(rec.renditions[TRAIN_RENDITION], str(path))
                    q = tokenize.evaluate_video(path, tid)
                    recon.append({"clip_id": rec.clip_id, "psnr": q["psnr"], "ssim": q["ssim"], "frames": q["frames"]})
        report["tokenizer"]["bridge_val_reconstruction"] = recon
        t = lap("tokenizer", t)

        # 4. the base: Pusher episodes with their actions
        console.rule("[bold]3. base world model (Pusher-v5 episodes with actions)")
        pusher_ids = [c.clip_id for c in clips["sim"] if c.video_id in set(sim["Pusher-v5"])]
        search.create_dataset({"name": "base-pusher", "clip_ids": pusher_ids, "description": "Pusher-v5 episodes"})
        s = budget.base_steps
        base = _job(
            train,
            train.train_world_model(
                {
                    "name": "sim2real-base",
                    "family": "diffusion",
                    "size": "tiny",
                    "tokenizer_id": tid,
                    "dataset": {"name": "base-pusher"},
                    "actions": True,
                    "window": WINDOW,
                    "context_frames": CONTEXT,
                    "eval_horizons": HORIZONS,
                    "steps": s,
                    "batch": 8,
                    "lr": budget.lr["base"],
                    "checkpoint_every": max(1, s // 2),
                    "log_every": max(1, s // 50),
                    "val_fraction": 0.15,
                    "eval_steps": 10,
                    "seed": 0,
                }
            ),
            console,
            "base (pretraining)",
        )
        report["base"] = {
            "model_id": base["model_id"],
            "steps": base["step"],
            "metrics": base["metrics"],
            "lineage": base["lineage"],
        }
        t = lap("base", t)

        # 5. post-training on Bridge train, evaluated on Bridge val
        console.rule("[bold]4. post-training on the Bridge train episodes (val held out)")
        records: dict[str, dict[str, Any]] = {}
        for method in METHODS:
            body: dict[str, Any] = {
                "name": f"sim2real-{method}",
                "base_model": base["model_id"],
                "dataset": {"name": "bridge-train"},
                "held_out": {"name": "bridge-val"},
                "mode": "action",
                "method": method,
                "steps": budget.post_steps,
                "batch": 8,
                "lr": budget.lr[method],
                "val_every": budget.val_every,
                "log_every": max(1, budget.post_steps // 50),
                "checkpoint_every": budget.post_steps,
                "eval_horizons": HORIZONS,
                "eval_steps": 10,
                "window": WINDOW,
                "context_frames": CONTEXT,
                "seed": 0,
            }
            if method == "full":
                body["baselines"] = ["scratch"]
            if method == "lora":
                body["lora"] = {"rank": 8, "alpha": 16}
            rec = _job(post, post.posttrain(body), console, f"post-training ({method})")
            records[method] = rec
            _check_no_val_in_training(
                store, rec["model_id"], tid, {c.clip_id for v in bridge["val"] for c in by_video.get(v, [])}
            )
        t = lap("posttrain", t)

        # 6. peak memory per method, the same loop in a child process
        console.rule("[bold]5. peak memory per method (child processes)")
        memory = {
            m: _probe(store_settings, records[m]["model_id"], m, budget.probe_steps, work, console) for m in METHODS
        }
        lap("memory_probes", t)

    report["posttrain"] = {m: _summary(store, r) for m, r in records.items()}
    report["memory"] = memory
    report["quality_vs_real"] = quality_rows(records, "real")
    report["quality_vs_decoded"] = quality_rows(records, "decoded")
    full = records["full"]
    curves = full.get("curves") or {}
    m = full.get("metrics") or {}
    post_curve, scratch_curve = curves.get("val_loss") or [], curves.get("scratch_val_loss") or []
    report["steps_ratio"] = {
        "service": {
            k: m[k]
            for k in (
                "steps_to_loss_target",
                "steps_to_loss_posttrained",
                "steps_to_loss_scratch",
                "steps_to_loss_ratio",
            )
            if k in m
        },
        "to_posttrained_final_loss": ratio_to_reach(post_curve, scratch_curve, float(post_curve[-1][1]))
        if post_curve
        else {},
    }
    report["steps_ratio"]["at_targets"] = ratio_targets(post_curve, scratch_curve)
    report["curves"] = {m_: (r.get("curves") or {}).get("val_loss") for m_, r in records.items()}
    report["curves"]["scratch"] = scratch_curve
    # the aim: the steps scratch needs to reach the post-trained model's (final) validation loss
    report["aims"] = aims(records, report["steps_ratio"]["to_posttrained_final_loss"])
    report["timings_s"]["total"] = round(time.perf_counter() - t_start, 1)
    return report


def _check_no_val_in_training(store: Any, model_id: str, tokenizer_id: str, val_clips: set[str]) -> None:
    """The frozen plan's training keys hold no clip of a val episode (the posttrain service's held_out)."""
    from worldloom.core.catalog import plan_key, token_shard_key, world_model_prefix

    plan = json.loads(store.get_bytes(plan_key(world_model_prefix(model_id))))
    leaked = {token_shard_key(tokenizer_id, c) for c in val_clips} & set(plan["train_keys"])
    if leaked:
        raise AssertionError(f"{model_id} trained on val clips {sorted(leaked)}")
    if {token_shard_key(tokenizer_id, c) for c in val_clips} != set(plan["val_keys"]):
        raise AssertionError(f"{model_id} is not evaluated on exactly the val episodes: {plan['val_keys']}")


def _summary(store: Any, rec: dict[str, Any]) -> dict[str, Any]:
    """What one post-training job cost: trainable parameters, the file it stored, step time."""
    m = rec.get("metrics") or {}
    prepared = (rec.get("notes") or {}).get("prepared") or {}
    uri = rec.get("model_uri") or ""
    key = store.key_from_uri(uri) if uri else None
    size = store.stat(key).size if key and store.exists(key) else None
    steps, seconds = m.get("train_steps"), m.get("train_seconds")
    return {
        "model_id": rec["model_id"],
        "trainable": prepared.get("trainable_parameters"),
        "total": prepared.get("total_parameters"),
        "trainable_modules": prepared.get("trainable_modules"),
        "file": key.rsplit("/", 1)[-1] if key else None,
        "file_bytes": size,
        "train_steps": steps,
        "train_seconds": seconds,
        "step_s": seconds / steps if steps and seconds else None,
        "scratch_step_s": (m["scratch_train_seconds"] / m["scratch_train_steps"])
        if m.get("scratch_train_steps")
        else None,
        "val_loss": m.get("val_loss"),
        "base_val_loss": m.get("base_val_loss"),
        "scratch_val_loss": m.get("scratch_val_loss"),
        "lineage": rec.get("lineage"),
    }


# ------------------------------------------------------------------------------------- memory probe


def _probe(store_settings: Any, model_id: str, method: str, steps: int, work: Path, console: Console) -> dict[str, Any]:
    """Runs the job's own frozen plan (``posttrain_loop``, in-process, no evaluation) for ``steps`` steps
    in a fresh child process, under another prefix, and returns its peak RSS increase and step time."""
    from worldloom.core.jobs import store_settings_payload

    spec = {"store": store_settings_payload(store_settings), "model_id": model_id, "steps": steps}
    path = work / f"probe-{method}.json"
    path.write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, __file__, "--probe", str(path)], capture_output=True, text=True, timeout=1800, check=False
    )
    if out.returncode != 0:
        console.print(f"[red]memory probe {method} failed: {out.stderr[-2000:]}")
        return {"error": out.stderr[-2000:]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    console.print(
        f"{method}: peak RSS +{result['peak_rss_delta_bytes'] / 1e6:.0f} MB over {steps} steps "
        f"({result['sec_per_step']:.3f} s/step)"
    )
    return result


def probe_main(path: Path) -> None:
    """The child: the plan of ``model_id`` with a few steps, no baseline, no horizons, its own prefix."""
    import peft  # noqa: F401  (imported before measuring: LoRA's library is not the method's memory)

    from worldloom.core.catalog import plan_key, world_model_prefix
    from worldloom.core.jobs import read_progress
    from worldloom.core.settings import StoreSettings
    from worldloom.core.store.factory import make_store
    from worldloom.models.posttrain.job import posttrain_loop
    from worldloom.models.training import ScalingSpec
    from worldloom.models.training.worker import launch

    spec = json.loads(path.read_text())
    settings = StoreSettings.model_validate(spec["store"])
    store = make_store(settings)
    plan = json.loads(store.get_bytes(plan_key(world_model_prefix(spec["model_id"]))))
    prefix = f"bench/probe-{spec['model_id']}"
    for obj in store.list(f"{prefix}/"):
        store.delete(obj.key)
    config = {
        **plan,
        "store": spec["store"],
        "prefix": prefix,
        "steps": int(spec["steps"]),
        "baselines": [],
        "eval_horizons": [],
        "val_every": 10**6,
        "checkpoint_every": 10**6,
        "log_every": 1,
    }
    before, measure = _rss_now(), "VmHWM (peak RSS, reset to the current RSS before the loop) minus VmRSS before"
    if not _reset_peak():  # no /proc/self/clear_refs: the process' lifetime peak (imports included)
        measure = "resource.getrusage(RUSAGE_SELF).ru_maxrss after the loop minus VmRSS before"
    t0 = time.perf_counter()
    launch(posttrain_loop, config, ScalingSpec(num_workers=1), name=prefix, in_process=True)
    wall = time.perf_counter() - t0
    peak = (
        _status_bytes("VmHWM")
        if measure.startswith("VmHWM")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )  # Linux: KiB
    progress = read_progress(store, prefix)
    print(
        json.dumps(
            {
                "peak_rss_bytes": peak,
                "rss_before_bytes": before,
                "peak_rss_delta_bytes": peak - before,
                "sec_per_step": progress.sec_per_step if progress else None,
                "wall_s": wall,
                "steps": int(spec["steps"]),
                "measure": measure,
            }
        )
    )


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # kB
    raise KeyError(field)


def _rss_now() -> int:
    try:
        return _status_bytes("VmRSS")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS (proc(5))."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------- output


def print_report(report: dict[str, Any], console: Console) -> None:
    head = ["row"] + [f"h{h} {f}" for h in HORIZONS for f in ("PSNR", "SSIM")]
    tok = report["tokenizer"]
    rec = tok.get("bridge_val_reconstruction") or []
    print(
        "\nBridge val episodes (5, never trained on), 64x64, 2 context latent frames (5 video frames), "
        f"tokenizer on {report.get('tokenizer_data')}, against the REAL frames (PSNR dB / SSIM):"
    )
    print(markdown(head, report["quality_vs_real"]))
    print("\nthe same against the tokenizer's decoding of the real future (the dynamics alone):")
    print(markdown(head, report["quality_vs_decoded"]))
    if rec:
        n = len(rec)
        print(
            f"\ntokenizer {tok['tokenizer_id']} ({tok['steps']} steps on the base corpus) reconstructing the Bridge "
            f"val clips: PSNR {sum(r['psnr'] for r in rec) / n:.2f} dB, SSIM {sum(r['ssim'] for r in rec) / n:.3f}"
            " (the ceiling of every PSNR against the real frames)"
        )
    sr = report["steps_ratio"]
    svc = sr["service"]
    if svc:
        print(
            f"\nsteps to reach the scratch model's best val loss {svc.get('steps_to_loss_target', float('nan')):.4f}: "
            f"post-trained {svc.get('steps_to_loss_posttrained', '-')}, scratch {svc.get('steps_to_loss_scratch', '-')}"
            f", ratio {svc.get('steps_to_loss_ratio', '-')}"
        )
    fin = sr["to_posttrained_final_loss"]
    if fin:
        bound = (
            f"ratio {fin['ratio']:.2f}"
            if "ratio" in fin
            else (
                f"scratch never reached it: ratio > {fin['ratio_lower_bound']:.2f}"
                if "ratio_lower_bound" in fin
                else "-"
            )
        )
        print(
            f"steps to reach the post-trained model's final val loss {fin['target']:.4f}: post-trained "
            f"{fin['posttrained_steps']}, scratch {fin['scratch_steps']}; {bound}"
        )
    for r in sr.get("at_targets") or []:
        got = (
            f"ratio {r['ratio']:.2f}"
            if "ratio" in r
            else (f"ratio > {r['ratio_lower_bound']:.2f}" if "ratio_lower_bound" in r else "-")
        )
        print(
            f"  target = post-trained loss at step {r['at_step']} ({r['target']:.4f}): post-trained "
            f"{r['posttrained_steps']}, scratch {r['scratch_steps']} steps; {got}"
        )
    print("\nper method (the same Bridge task, one run):")
    rows = []
    for method, s in report["posttrain"].items():
        mem = report["memory"].get(method) or {}
        delta = mem.get("peak_rss_delta_bytes")
        rows.append(
            [
                method,
                f"{s['trainable']:,}" if s.get("trainable") is not None else "-",
                f"{100 * s['trainable'] / s['total']:.1f}%" if s.get("trainable") and s.get("total") else "-",
                f"{s['file']} {mb(s['file_bytes'])}",
                "-" if delta is None else f"+{delta / 1e6:.0f} MB",
                "-" if s.get("step_s") is None else f"{s['step_s']:.3f}",
                "-" if s.get("val_loss") is None else f"{s['val_loss']:.4f}",
            ]
        )
    full = report["posttrain"].get("full") or {}
    if full.get("scratch_step_s") is not None:
        rows.append(
            [
                "scratch",
                f"{full['total']:,}" if full.get("total") else "-",
                "100.0%",
                "-",
                "-",
                f"{full['scratch_step_s']:.3f}",
                "-" if full.get("scratch_val_loss") is None else f"{full['scratch_val_loss']:.4f}",
            ]
        )
    print(
        markdown(
            [
                "method",
                "trainable params",
                "share",
                "stored file",
                "peak RSS added (child)",
                "s/step (service job)",
                "final val loss",
            ],
            rows,
        )
    )
    print()
    for line in report["aims"]:
        print(line)
    print(f"\ntimings (s): {report['timings_s']}")


def plot_curves(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    styles = {
        "full": ("tab:red", "-"),
        "lora": ("tab:blue", "-"),
        "heads": ("tab:green", "-"),
        "scratch": ("tab:gray", "--"),
    }
    for name, curve in report["curves"].items():
        if curve:
            colour, ls = styles[name]
            label = "scratch (same budget)" if name == "scratch" else f"post-trained ({name})"
            ax.plot([p[0] for p in curve], [p[1] for p in curve], ls, color=colour, label=label)
    ax.set_xlabel("training step (phase-local)")
    ax.set_ylabel("held-out val loss (flow matching)")
    ax.set_title("Bridge val episodes: post-trained from the sim base vs scratch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets: the path works, the figures mean nothing")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("WORLDLOOM_SHARED_DATA", "../shared/data")))
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    ap.add_argument(
        "--tokenizer-bridge-train",
        action="store_true",
        help="also train the tokenizer on the Bridge train episodes' frames (never val; the base world model "
        "still sees no Bridge): separates the tokenizer's domain gap from the dynamics' transfer",
    )
    ap.add_argument("--keep", action="store_true", help="keep the run's store (out/bench/sim_to_real_store)")
    ap.add_argument("--probe", type=Path, help=argparse.SUPPRESS)  # the memory probe's child
    args = ap.parse_args()
    if args.probe is not None:
        probe_main(args.probe)
        return
    os.environ.setdefault("MUJOCO_GL", "egl")

    console = Console(stderr=True)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "sim_to_real_store"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    name = ("sim_to_real_quick" if args.quick else "sim_to_real") + (
        "_tok_bridge" if args.tokenizer_bridge_train else ""
    )
    report = run(args.data, args.out, QUICK if args.quick else FULL, console, work, args.tokenizer_bridge_train)
    report["mode"] = "quick" if args.quick else "full"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    plot_curves(report, args.out / f"{name}_val_loss.png")
    print_report(report, console)
    print(f"\nwrote {args.out / f'{name}.json'} and {args.out / f'{name}_val_loss.png'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
