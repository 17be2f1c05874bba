"""Demo stage 4: the tokenize service trains a small video tokenizer on the curated clips through its
HTTP API (the same client and progress bar as `worldloom tokenizer train`), activates it so every
curated clip is encoded into a token shard, and the demo writes reconstructions of held-out clips
(``tokenizer_recon.gif``) and the training curves (``tokenizer_psnr.png``) next to the report."""

from __future__ import annotations

import base64
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.cli.tokenizer_cmd import follow_training, latest
from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import TRAIN_RENDITION, ClipRecord
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.demo.clips import DEMO_ENCODE_MAX_FRAMES, accepted_clips, heldout_clips, wait_for_tokens
from worldloom.demo.plots import plot_training_curves, write_grid_gif
from worldloom.tokenize.codec import square_frames

#: training steps of the demo tokenizer (about 1 s a step on 2 CPU cores); 0 skips the tokenizer stage
DEFAULT_TOKENIZER_STEPS = 150
RECON_GIF, CURVES_PNG = "tokenizer_recon.gif", "tokenizer_psnr.png"


def tokenizer_stage(stack: ExitStack, store: LocalStore, bus: InProcessBus, store_settings: StoreSettings,
                     http: HttpSettings, token: str, config_hash: str, steps: int, out: Path,
                     console: Console) -> dict[str, Any]:
    from worldloom.tokenize.app import build_app as build_tokenize
    from worldloom.tokenize.settings import TokenizeSettings

    # training.in_process: the job runs the same training loop Ray Train workers run, but in this
    # process, so the demo does not wait 30-60 s for a local Ray cluster to start on a small machine.
    settings = TokenizeSettings(store=store_settings, http=http, training={"in_process": True},
                                encode_max_frames=DEMO_ENCODE_MAX_FRAMES)
    server = stack.enter_context(BackgroundServer(build_tokenize(settings, store=store, bus=bus)))
    console.print(f"tokenize API {server.url} (training in-process; a deployment trains on Ray)")
    client = WorldloomClient(server.url, token)
    try:
        return {"api": server.url, **_train_and_tokenize(client, store, bus, config_hash, steps, out, console)}
    except ApiFailure as exc:
        console.print(f"[red]tokenizer stage failed: {exc}")
        return {"error": str(exc)}
    finally:
        client.close()


def _train_and_tokenize(client: WorldloomClient, store: LocalStore, bus: InProcessBus, config_hash: str, steps: int,
                        out: Path, console: Console) -> dict[str, Any]:
    for stale in client.list_tokenizers():  # a job an interrupted earlier demo left behind resumes at start-up
        if stale["state"] in ("queued", "running"):
            client.cancel_tokenizer(stale["tokenizer_id"])
            console.print(f"[yellow]cancelled {stale['tokenizer_id']}, left unfinished by an earlier run")
    clips = accepted_clips(store, config_hash)
    body = {"name": "demo-tiny", "clips": {"config_hash": config_hash}, "kind": "continuous", "size": "tiny",
            "compression": "4x8x8", "resolution": 64, "frames": 17, "steps": steps, "batch": 4,
            "log_every": max(1, steps // 50), "checkpoint_every": max(1, steps // 2), "val_fraction": 0.1, "seed": 0}
    start = time.perf_counter()
    record = client.train_tokenizer(body)
    tid, lineage = record["tokenizer_id"], record["lineage"]
    console.print(f"training [bold]{tid}[/] (continuous tiny 4x8x8, 64px, 17 frames, {steps} steps) on "
                  f"{lineage['train_clips']} curated clips, {lineage['val_clips']} held out")
    record = follow_training(client, tid, console, poll_s=1.0, record=record)
    train_s = time.perf_counter() - start
    section: dict[str, Any] = {
        "tokenizer_id": tid, "state": record["state"], "config": {k: v for k, v in body.items() if k != "clips"},
        "clip_filter": body["clips"], "steps": record["step"], "train_seconds": round(train_s, 1),
        "metrics": record["metrics"], "final_train": {"loss": latest(record, "loss"), "psnr": latest(record, "psnr")},
        "lineage": record["lineage"],
    }
    if record["state"] != "succeeded":
        console.print(f"[red]training {record['state']}: {record.get('error')}")
        section["error"] = record.get("error") or record["state"]
        return section
    console.print(f"trained in {train_s:.0f}s: held-out PSNR {record['metrics'].get('val_psnr', float('nan')):.2f} dB, "
                  f"SSIM {record['metrics'].get('val_ssim', float('nan')):.3f}")

    # activation: the service backfills every accepted curated clip into tokens/<tid>/<clip>.tar
    start = time.perf_counter()
    client.activate_tokenizer(tid)
    done = wait_for_tokens(store, tid, len(clips), console)
    tokenize_s = time.perf_counter() - start
    events_ = sum(1 for m in bus.messages(events.TOPIC_CLIPS_TOKENIZED)
                  if events.decode(m.value).clip_tokenized.tokenizer_id == tid)
    console.print(f"{done}/{len(clips)} clips tokenized into tokens/{tid}/ ({events_} clips.tokenized events) "
                  f"in {tokenize_s:.1f}s")
    section.update({"clips_tokenized": done, "clips_accepted": len(clips), "tokenized_events": events_,
                    "tokenize_seconds": round(tokenize_s, 1)})

    # reconstructions of held-out clips through /v1/evaluate, /v1/encode and /v1/decode
    chosen = heldout_clips(clips, record)
    section["heldout"], recon_rows = _reconstruct(client, store, tid, chosen, console)
    files: dict[str, str] = {}
    if recon_rows:
        write_recon_gif(recon_rows, out / RECON_GIF)
        files["recon_gif"] = RECON_GIF
    plot_training_curves(record["curves"].get("psnr", []), record["curves"].get("loss", []), out / CURVES_PNG,
                         title=f"tokenizer {tid}: continuous tiny 4x8x8, 64px", val_psnr=record["metrics"].get("val_psnr"))
    files["curves_png"] = CURVES_PNG
    section["files"] = files
    return section


def _reconstruct(client: WorldloomClient, store: LocalStore, tid: str, clips: list[tuple[ClipRecord, str]],
                 console: Console, max_latent_t: int = 9) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray]]]:
    """Per clip: PSNR/SSIM from /v1/evaluate, and the first 1 + 4 * (max_latent_t - 1) frames as
    (original, reconstruction) from /v1/encode (b64 latents) -> /v1/decode (json frames)."""
    rows, pairs = [], []
    with tempfile.TemporaryDirectory(prefix="wl-demo-tok-") as tmp:
        for rec, split in clips:
            path = Path(tmp) / f"{rec.clip_id}.mp4"
            store.download(rec.renditions[TRAIN_RENDITION], str(path))
            q = client.evaluate_video(path, tid)
            enc = client.encode_video(path, tid, encoding="b64")
            tokens = enc["tokens"]
            latents = np.frombuffer(base64.b64decode(tokens["b64"]), dtype=np.dtype(tokens["dtype"]).newbyteorder("<"))
            latents = latents.reshape(tokens["shape"])[:, :max_latent_t]  # causal: the first latents decode the first frames
            sliced = {"shape": list(latents.shape), "dtype": tokens["dtype"],
                      "b64": base64.b64encode(np.ascontiguousarray(latents).tobytes()).decode()}
            recon = np.asarray(client.decode_tokens(sliced, tid, fmt="json")["frames"], dtype=np.uint8)
            original = square_frames(path, enc["resolution"], DEMO_ENCODE_MAX_FRAMES)[: len(recon)]
            pairs.append((original, recon))
            rows.append({"clip_id": rec.clip_id, "source": rec.source, "split": split, "psnr": round(q["psnr"], 3),
                         "ssim": round(q["ssim"], 4), "frames": q["frames"], "latent_shape": tokens["shape"],
                         "gif_frames": int(len(recon))})
            console.print(f"  {split} clip {rec.clip_id[:12]} ({rec.source}): PSNR {q['psnr']:.2f} dB, "
                          f"SSIM {q['ssim']:.3f} over {q['frames']} frames; latents {tokens['shape']}")
    return rows, pairs


def write_recon_gif(pairs: list[tuple[np.ndarray, np.ndarray]], path: Path, zoom: int = 2, fps: float = 6.0) -> Path:
    """One row per clip: original | reconstruction."""
    return write_grid_gif([list(p) for p in pairs], ["original", "reconstruction"], path, zoom=zoom, fps=fps)


def tokenizer_summary(section: dict[str, Any], out: Path, console: Console) -> None:
    table = Table(title="tokenizer", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    if "tokenizer_id" in section:
        table.add_row("id", f"{section['tokenizer_id']} ({section['state']})")
    if section.get("error"):
        table.add_row("error", f"[red]{section['error']}")
    if "steps" in section:
        lin = section["lineage"]
        table.add_row("training", f"{section['steps']} steps in {section['train_seconds']:.0f}s on "
                                  f"{lin['train_clips']} clips ({lin['val_clips']} held out)")
        ft = section["final_train"]
        if ft["loss"] is not None:
            table.add_row("last train loss / PSNR", f"{ft['loss']:.4f} / {ft['psnr']:.2f} dB")
    m = section.get("metrics") or {}
    if "val_psnr" in m:
        table.add_row("held-out PSNR / SSIM", f"{m['val_psnr']:.2f} dB / {m['val_ssim']:.4f}")
    if "clips_tokenized" in section:
        table.add_row("clips tokenized", f"{section['clips_tokenized']}/{section['clips_accepted']} in "
                                         f"{section['tokenize_seconds']:.1f}s ({section['tokenized_events']} events)")
    for h in section.get("heldout", []):
        table.add_row(f"{h['split']} {h['clip_id'][:12]}", f"{h['psnr']:.2f} dB, SSIM {h['ssim']:.3f} ({h['source']}, "
                                                          f"{h['frames']} frames)")
    for name in (section.get("files") or {}).values():
        table.add_row("file", str(out / name))
    console.print(table)
