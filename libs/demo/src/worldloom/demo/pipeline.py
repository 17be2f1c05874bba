"""The embedded pipeline behind `make demo`: every service in one process on the embedded defaults.

Real videos are uploaded through the real ingest API (the same client as `worldloom ingest`), stored
in a local directory and announced on the in-process bus; the curate service consumes those events
and writes clips, shards and Milvus Lite vectors; the search service answers text queries over HTTP.
Then the tokenize service trains a small video tokenizer on the curated clips through its HTTP API
(the same client and progress bar as `worldloom tokenizer train`), activates it so every curated clip
is encoded into a token shard, and the demo writes reconstructions and training curves next to the report.
Last, simulator episodes are recorded, curated and tokenized, and the train service pretrains a tiny
world model of each family on them.

Stages 4 and 5 live in ``tokenizer_stage.py`` and ``world_stage.py``; ``clips.py`` holds what both read.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from worldloom.cli.client import WorldloomClient
from worldloom.cli.ingest_cmd import outcome_table, upload_all
from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import SHARDS_PREFIX, curated_marker_key, read_clip
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings, VectorSettings
from worldloom.core.store.local import LocalStore
from worldloom.core.vectors import VectorIndex
from worldloom.demo.clips import accepted_clips, wait_for_curation
from worldloom.demo.posttrain_stage import posttrain_stage, posttrain_summary
from worldloom.demo.rl_stage import rl_stage, rl_summary
from worldloom.demo.tokenizer_stage import DEFAULT_TOKENIZER_STEPS, tokenizer_stage, tokenizer_summary
from worldloom.demo.world_stage import world_stage, world_summary

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
        wait_for_curation(store, video_ids, config_hash, console)
        wall = time.perf_counter() - start
        _curation_report(store, video_ids, config_hash, wall, bus, console)

        console.rule("[bold]3. search")
        searcher = WorldloomClient(search.url, token)
        report: dict[str, Any] = {"queries": {}}
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
            report["tokenizer"] = tokenizer_stage(stack, store, bus, store_settings, http, token, config_hash, steps,
                                                   out, console)
            tok = report["tokenizer"]
            if world_models and tok.get("state") == "succeeded" and "api" in tok:
                console.rule("[bold]5. world models on simulator episodes (record, curate, tokenize, train)")
                with WorldloomClient(tok["api"], token) as tokenize:
                    report["world_models"] = world_stage(stack, store, bus, store_settings, http, token, ingest.url,
                                                         tokenize, tok["tokenizer_id"],
                                                         len(accepted_clips(store, config_hash)), out, console)
                    diffusion = (report["world_models"].get("models") or {}).get("diffusion") or {}
                    if diffusion.get("state") == "succeeded":
                        console.rule("[bold]6. post-training on a search (a new embodiment, LoRA)")
                        report["posttrain"] = posttrain_stage(stack, store, bus, store_settings, http, token, index,
                                                              ingest.url, tokenize, tok["tokenizer_id"],
                                                              len(accepted_clips(store, config_hash)), diffusion,
                                                              out, console)

        if world_models:
            console.rule("[bold]7. RL in the world model's imagination (a short closed loop)")
            report["rl"] = rl_stage(stack, store, bus, store_settings, http, token, out, console)

    report.update({
        "store": str(store.root),
        "uploaded": [{"path": str(o.path), "video_id": o.video_id, "result": o.status, "detail": o.detail}
                     for o in outcomes],
    })
    (out / "demo_report.json").write_text(json.dumps(report, indent=2))
    if "tokenizer" in report:
        tokenizer_summary(report["tokenizer"], out, console)
    if "world_models" in report:
        world_summary(report["world_models"], out, console)
    if "posttrain" in report:
        posttrain_summary(report["posttrain"], out, console)
    if "rl" in report:
        rl_summary(report["rl"], out, console)
    console.print(f"[green]done; report: {out / 'demo_report.json'}")
    return report


def _curation_report(store: LocalStore, video_ids: list[str], config_hash: str, wall: float, bus: InProcessBus,
                     console: Console) -> None:
    total = accepted = 0
    reasons: dict[str, int] = {}
    for vid in video_ids:
        marker = json.loads(store.get_bytes(curated_marker_key(vid, config_hash)))
        total += marker["clips_total"]
        accepted += len(marker["accepted"])
        for cid in marker["rejected"]:
            for r in read_clip(store, cid).rejections:
                reasons[r.filter] = reasons.get(r.filter, 0) + 1
    shards = sum(1 for o in store.list(SHARDS_PREFIX) if o.key.endswith(".tar"))
    curated_events = len(bus.messages(events.TOPIC_CLIPS_CURATED))
    console.print(f"{len(video_ids)} videos -> {total} clips, [green]{accepted} accepted[/], "
                  f"{total - accepted} rejected {reasons}; {shards} webdataset shards; "
                  f"{curated_events} clips.curated events; {wall:.1f}s wall")
