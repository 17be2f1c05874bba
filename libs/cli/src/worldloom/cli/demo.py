"""The embedded pipeline behind `make demo`: every service in one process on the embedded defaults.

Today it runs ingest: real videos are uploaded through the real HTTP API (the same client as
`worldloom ingest`), stored in a local directory, announced on the in-process bus, and a consumer
reports what arrived. Later stages (curate, tokenize, train) hang off the same bus.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
from pathlib import Path

from rich.console import Console
from rich.table import Table

from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.cli.client import WorldloomClient
from worldloom.cli.ingest_cmd import outcome_table, upload_all


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


def run_demo(data: Path, out: Path, console: Console) -> None:
    from worldloom.ingest.app import build_app
    from worldloom.ingest.settings import IngestSettings

    out.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)
    bus = InProcessBus()
    settings = IngestSettings(
        store=StoreSettings(kind="local", root=out / "store"),
        http=HttpSettings(api_tokens=token),
    )
    arrived: list[events.Envelope] = []
    consumer = bus.consumer([events.TOPIC_VIDEOS_INGESTED], "demo-report", arrived.append)
    stop = threading.Event()
    worker = threading.Thread(target=consumer.run, args=(stop, 0.1), daemon=True)
    worker.start()

    files, attrs = demo_inputs(data)
    console.rule("[bold]Worldloom embedded demo: ingest")
    console.print(f"store: {settings.store.root.resolve()}  bus: in-process  inputs: {len(files)} videos")
    with BackgroundServer(build_app(settings, bus=bus)) as server:
        client = WorldloomClient(server.url, token)
        console.print(f"ingest API on {server.url} (OpenAPI docs at {server.url}/docs)")
        outcomes = upload_all(client, files, console, attrs)
        console.print(outcome_table(outcomes))

        console.rule("[bold]idempotency and bad input")
        again = upload_all(client, files[:1], console)
        console.print(f"re-upload of {files[0].name}: [yellow]{again[0].status}[/] (same id, no new event)")
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / "corrupt.mp4"
            bad.write_bytes(secrets.token_bytes(64 * 1024))
            rejected = upload_all(client, [bad], console)[0]
        console.print(f"random bytes named corrupt.mp4: [red]{rejected.status}[/] ({rejected.detail})")
        client.close()

    while True:  # let the consumer catch up with everything published
        if consumer.drain(idle_polls=1, timeout_s=0.1) == 0 and len(arrived) >= _published(bus):
            break
    stop.set()
    worker.join(5)

    table = Table(title=f"videos.ingested: {len(arrived)} events consumed")
    for col in ("video id", "source", "resolution", "fps", "duration", "frames", "instruction"):
        table.add_column(col, overflow="ellipsis", no_wrap=True)
    for env in arrived:
        v = env.video_ingested
        a = v.attributes
        source = f"bridge/{a['split']}/{a['episode']}" if a.get("dataset") == "bridge" else v.filename
        table.add_row(v.video_id[:12], source, f"{v.info.width}x{v.info.height}", f"{v.info.fps:.2f}",
                      f"{v.info.duration_s:.1f}s", str(v.info.frame_count), a.get("instruction", "")[:48])
    console.print(table)
    report = {
        "store": str(settings.store.root.resolve()),
        "uploaded": [{"path": str(o.path), "video_id": o.video_id, "result": o.status, "detail": o.detail}
                     for o in outcomes],
        "events": [{"event_id": e.event_id, "video_id": e.video_ingested.video_id, "uri": e.video_ingested.uri}
                   for e in arrived],
    }
    (out / "ingest_report.json").write_text(json.dumps(report, indent=2))
    new = sum(o.status == "new" for o in outcomes)
    console.print(f"[green]ingested {new} new videos, {len(arrived)} events; report: {out / 'ingest_report.json'}")


def _published(bus: InProcessBus) -> int:
    return len(bus.messages(events.TOPIC_VIDEOS_INGESTED))
