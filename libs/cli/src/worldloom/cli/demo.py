"""The embedded pipeline behind `make demo`: every service in one process on the embedded defaults.

Real videos are uploaded through the real ingest API (the same client as `worldloom ingest`), stored
in a local directory and announced on the in-process bus; the curate service consumes those events
and writes clips, shards and Milvus Lite vectors; the search service answers text queries over HTTP.
Then the tokenize service trains a small video tokenizer on the curated clips through its HTTP API
(the same client and progress bar as `worldloom tokenizer train`), activates it so every curated clip
is encoded into a token shard, and the demo writes reconstructions and training curves next to the report.
Last, simulator episodes are recorded, curated and tokenized, and the train service pretrains a tiny
world model of each family on them (see demo_world.py).
"""

from __future__ import annotations

import base64
import json
import secrets
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.cli.ingest_cmd import outcome_table, upload_all
from worldloom.cli.tokenizer_cmd import follow_training, latest
from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import TRAIN_RENDITION, ClipRecord, curated_marker_key
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings, VectorSettings
from worldloom.core.store.local import LocalStore
from worldloom.core.vectors import VectorIndex

#: training steps of the demo tokenizer (about 1 s a step on 2 CPU cores); 0 skips the tokenizer stage
DEFAULT_TOKENIZER_STEPS = 150
#: curated clips are at most CurationConfig.max_clip_s (10 s) at the source frame rate: encode them whole
DEMO_ENCODE_MAX_FRAMES = 601
RECON_GIF, CURVES_PNG = "tokenizer_recon.gif", "tokenizer_psnr.png"

DEMO_QUERIES = [
    "put the pot in the sink",
    "move the cloth",
    "a fast moving shot with a panning camera",
    "dark shot with black and grey colours",
]


def demo_inputs(data: Path) -> tuple[list[Path], dict[Path, dict[str, str]]]:
    """The shared real videos plus robot episodes, with each episode's instruction as an attribute."""
    files = sorted((data / "video").rglob("*.mp4"))
    attrs: dict[Path, dict[str, str]] = {f: {"dataset": f.parent.name} for f in files}
    for ann in sorted((data / "bridge" / "annotation").rglob("*.json")):
        episode = ann.stem
        video = data / "bridge" / "videos" / ann.parent.name / episode / "rgb.mp4"
        if not video.is_file():
            continue
        meta = json.loads(ann.read_text())
        texts = meta.get("texts") or [""]
        files.append(video)
        attrs[video] = {"dataset": "bridge", "split": ann.parent.name, "episode": episode,
                        "instruction": str(texts[0])[:500]}
    return files, attrs


def run_demo(data: Path, out: Path, console: Console, tokenizer_steps: int | None = None,
             world_models: bool = True) -> dict[str, Any]:
    """Runs every stage; returns the report (also written to ``out/demo_report.json``)."""
    from worldloom.curate.app import build_app as build_curate
    from worldloom.curate.config import CurationConfig
    from worldloom.curate.settings import CurateSettings
    from worldloom.ingest.app import build_app as build_ingest
    from worldloom.ingest.settings import IngestSettings
    from worldloom.search.app import build_app as build_search
    from worldloom.search.settings import SearchSettings

    out.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)
    http = HttpSettings(api_tokens=token)
    store_settings = StoreSettings(kind="local", root=out / "store")
    vectors = VectorSettings(uri=str((out / "vectors.db").resolve()))
    bus, store = InProcessBus(), LocalStore(store_settings.root)
    index = VectorIndex(vectors.uri)
    files, attrs = demo_inputs(data)
    console.rule("[bold]Worldloom embedded demo")
    console.print(f"store: {store.root}  vectors: Milvus Lite {vectors.uri}  bus: in-process  inputs: {len(files)} videos")

    with ExitStack() as stack:
        ingest = stack.enter_context(BackgroundServer(build_ingest(IngestSettings(store=store_settings, http=http), store=store, bus=bus)))
        curate_app = build_curate(CurateSettings(store=store_settings, http=http, vectors=vectors), store=store, bus=bus, index=index)
        curate = stack.enter_context(BackgroundServer(curate_app))
        search = stack.enter_context(BackgroundServer(build_search(SearchSettings(store=store_settings, http=http, vectors=vectors),
                                                                  store=store, bus=bus, index=index)))
        console.print(f"APIs (OpenAPI at /docs): ingest {ingest.url}  curate {curate.url}  search {search.url}")

        console.rule("[bold]1. ingest")
        client = WorldloomClient(ingest.url, token)
        outcomes = upload_all(client, files, console, attrs)
        console.print(outcome_table(outcomes))
        again = upload_all(client, files[:1], console)
        console.print(f"re-upload of {files[0].name}: [yellow]{again[0].status}[/] (same id, no new event)")
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / "corrupt.mp4"
            bad.write_bytes(secrets.token_bytes(64 * 1024))
            rejected = upload_all(client, [bad], console)[0]
        console.print(f"random bytes named corrupt.mp4: [red]{rejected.status}[/] ({rejected.detail})")
        client.close()

        console.rule("[bold]2. curate (consuming videos.ingested)")
        video_ids = [o.video_id for o in outcomes if o.video_id]
        config_hash = curate_app.state.curate.config_hash(CurationConfig())
        start = time.perf_counter()
        _wait_for_curation(store, video_ids, config_hash, console)
        wall = time.perf_counter() - start
        _curation_report(store, video_ids, config_hash, wall, bus, console)

        console.rule("[bold]3. search")
        searcher = WorldloomClient(search.url, token)
        report = {"queries": {}}
        for query in DEMO_QUERIES:
            hits = searcher.search({"text": query, "top_k": 3})["hits"]
            report["queries"][query] = hits
            table = Table(title=f"top 3 for {query!r}", title_justify="left")
            for col in ("score", "source", "span", "caption"):
                table.add_column(col, overflow="fold" if col == "caption" else "ellipsis")
            for h in hits:
                table.add_row(f"{h['score']:.3f}", h["source"], f"{h['start_s']:.1f}-{h['end_s']:.1f}s", h["caption"])
            console.print(table)
        searcher.close()

        steps = DEFAULT_TOKENIZER_STEPS if tokenizer_steps is None else tokenizer_steps
        if steps > 0:
            console.rule("[bold]4. tokenizer (train, activate + backfill, reconstruct)")
            report["tokenizer"] = _tokenizer_stage(stack, store, bus, store_settings, http, token, config_hash, steps,
                                                   out, console)
            tok = report["tokenizer"]
            if world_models and tok.get("state") == "succeeded" and "api" in tok:
                from worldloom.cli.demo_world import world_stage

                console.rule("[bold]5. world models on simulator episodes (record, curate, tokenize, train)")
                with WorldloomClient(tok["api"], token) as tokenize:
                    report["world_models"] = world_stage(stack, store, bus, store_settings, http, token, ingest.url,
                                                         tokenize, tok["tokenizer_id"],
                                                         len(_accepted_clips(store, config_hash)), out, console)

    report.update({
        "store": str(store.root),
        "uploaded": [{"path": str(o.path), "video_id": o.video_id, "result": o.status, "detail": o.detail}
                     for o in outcomes],
    })
    (out / "demo_report.json").write_text(json.dumps(report, indent=2))
    if "tokenizer" in report:
        _tokenizer_summary(report["tokenizer"], out, console)
    if "world_models" in report:
        from worldloom.cli.demo_world import world_summary

        world_summary(report["world_models"], out, console)
    console.print(f"[green]done; report: {out / 'demo_report.json'}")
    return report


def _wait_for_curation(store: LocalStore, video_ids: list[str], config_hash: str, console: Console) -> None:
    columns = (TextColumn("[bold]curating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("curate", total=len(video_ids))
        while True:
            done = sum(store.exists(curated_marker_key(v, config_hash)) for v in video_ids)
            progress.update(task, completed=done)
            if done == len(video_ids):
                return
            time.sleep(0.5)


def _curation_report(store: LocalStore, video_ids: list[str], config_hash: str, wall: float, bus: InProcessBus,
                     console: Console) -> None:
    total = accepted = 0
    reasons: dict[str, int] = {}
    for vid in video_ids:
        marker = json.loads(store.get_bytes(curated_marker_key(vid, config_hash)))
        total += marker["clips_total"]
        accepted += len(marker["accepted"])
        for cid in marker["rejected"]:
            rec = json.loads(store.get_bytes(f"clips/{cid}/meta.json"))
            for r in rec["rejections"]:
                reasons[r["filter"]] = reasons.get(r["filter"], 0) + 1
    shards = sum(1 for o in store.list("shards/") if o.key.endswith(".tar"))
    curated_events = len(bus.messages(events.TOPIC_CLIPS_CURATED))
    console.print(f"{len(video_ids)} videos -> {total} clips, [green]{accepted} accepted[/], "
                  f"{total - accepted} rejected {reasons}; {shards} webdataset shards; "
                  f"{curated_events} clips.curated events; {wall:.1f}s wall")


# ------------------------------------------------------------------------------------ 4. tokenizer


def _accepted_clips(store: LocalStore, config_hash: str) -> list[ClipRecord]:
    recs = []
    for info in store.list("clips/"):
        if info.key.endswith("/meta.json"):
            rec = ClipRecord.model_validate_json(store.get_bytes(info.key))
            if rec.status == "accepted" and TRAIN_RENDITION in rec.renditions and rec.config_hash == config_hash:
                recs.append(rec)
    return sorted(recs, key=lambda r: r.clip_id)


def _tokenizer_stage(stack: ExitStack, store: LocalStore, bus: InProcessBus, store_settings: StoreSettings,
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
    clips = _accepted_clips(store, config_hash)
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
    done = _wait_for_tokens(store, tid, len(clips), console)
    tokenize_s = time.perf_counter() - start
    events_ = sum(1 for m in bus.messages(events.TOPIC_CLIPS_TOKENIZED)
                  if events.decode(m.value).clip_tokenized.tokenizer_id == tid)
    console.print(f"{done}/{len(clips)} clips tokenized into tokens/{tid}/ ({events_} clips.tokenized events) "
                  f"in {tokenize_s:.1f}s")
    section.update({"clips_tokenized": done, "clips_accepted": len(clips), "tokenized_events": events_,
                    "tokenize_seconds": round(tokenize_s, 1)})

    # reconstructions of held-out clips through /v1/evaluate, /v1/encode and /v1/decode
    heldout = _heldout(clips, record)
    section["heldout"], recon_rows = _reconstruct(client, store, tid, heldout, console)
    files: dict[str, str] = {}
    if recon_rows:
        _write_recon_gif(recon_rows, out / RECON_GIF)
        files["recon_gif"] = RECON_GIF
    try:
        from worldloom.cli.plots import plot_training_curves

        plot_training_curves(record["curves"].get("psnr", []), record["curves"].get("loss", []), out / CURVES_PNG,
                             title=f"tokenizer {tid}: continuous tiny 4x8x8, 64px",
                             val_psnr=record["metrics"].get("val_psnr"))
        files["curves_png"] = CURVES_PNG
    except ImportError:
        console.print("[yellow]Pillow is not installed: no training-curve plot")
    section["files"] = files
    return section


def _wait_for_tokens(store: LocalStore, tid: str, expected: int, console: Console, stall_s: float = 120.0) -> int:
    """Counts ``tokens/<tid>/*.done`` markers until every clip is done (or nothing moves for ``stall_s``)."""
    columns = (TextColumn("[bold]tokenizing clips"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    done, last_change, last = 0, time.monotonic(), -1
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("tokenize", total=expected)
        while True:
            done = sum(1 for o in store.list(f"tokens/{tid}/") if o.key.endswith(".done"))
            progress.update(task, completed=done)
            if done != last:
                last, last_change = done, time.monotonic()
            if done >= expected:
                return done
            if time.monotonic() - last_change > stall_s:
                console.print(f"[yellow]backfill stalled at {done}/{expected} clips (see the log for failed clips)")
                return done
            time.sleep(0.5)


def _heldout(clips: list[ClipRecord], record: dict[str, Any], n: int = 3) -> list[tuple[ClipRecord, str]]:
    """Up to ``n`` of the clips the job held out (the service's own split), else training clips."""
    from worldloom.core.selection import SelectedClip, Selection

    sel = Selection([SelectedClip(c.clip_id, c.video_id, c.renditions[TRAIN_RENDITION]) for c in clips])
    val_keys = [c.train_key for c in sel.split(float(record["request"]["val_fraction"]))[1]]
    by_key = {c.renditions[TRAIN_RENDITION]: c for c in clips}
    chosen = [(by_key[k], "held out") for k in val_keys if k in by_key]
    chosen += [(c, "train") for c in clips if c.renditions[TRAIN_RENDITION] not in val_keys]
    return chosen[:n]


def _reconstruct(client: WorldloomClient, store: LocalStore, tid: str, clips: list[tuple[ClipRecord, str]],
                 console: Console, max_latent_t: int = 9) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray]]]:
    """Per clip: PSNR/SSIM from /v1/evaluate, and the first 1 + 4 * (max_latent_t - 1) frames as
    (original, reconstruction) from /v1/encode (b64 latents) -> /v1/decode (json frames)."""
    from worldloom.tokenize.codec import square_frames

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


def _write_recon_gif(pairs: list[tuple[np.ndarray, np.ndarray]], path: Path, zoom: int = 2, fps: float = 6.0) -> Path:
    """One row per clip: original | reconstruction."""
    from worldloom.cli.plots import write_grid_gif

    return write_grid_gif([list(p) for p in pairs], ["original", "reconstruction"], path, zoom=zoom, fps=fps)


def _tokenizer_summary(section: dict[str, Any], out: Path, console: Console) -> None:
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
