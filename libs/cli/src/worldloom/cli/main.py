"""The `worldloom` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.cli.ingest_cmd import expand_paths, outcome_table, upload_all

app = typer.Typer(help="Worldloom: build world foundation models from video.", no_args_is_help=True)
console = Console(stderr=True)

ApiOpt = Annotated[Optional[str], typer.Option("--api", envvar="WORLDLOOM_API_URL", help="service base URL")]
TokenOpt = Annotated[Optional[str], typer.Option("--token", envvar="WORLDLOOM_API_TOKEN", help="bearer token")]


def _parse_attrs(pairs: list[str]) -> dict[str, str]:
    attrs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--attr takes KEY=VALUE, got {pair!r}")
        attrs[key] = value
    return attrs


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="video files or folders (searched recursively)")],
    api: ApiOpt = None,
    token: TokenOpt = None,
    attr: Annotated[list[str], typer.Option("--attr", help="KEY=VALUE stored with every video")] = [],
    as_json: Annotated[bool, typer.Option("--json", help="print results as JSON lines")] = False,
) -> None:
    """Upload videos to the ingest service (validated, probed, stored, announced on videos.ingested)."""
    try:
        files = expand_paths(paths)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not files:
        console.print("[yellow]no video files found")
        raise typer.Exit(1)
    attrs = _parse_attrs(attr)
    client = WorldloomClient(api, token)
    try:
        outcomes = upload_all(client, files, console, {f: attrs for f in files} if attrs else None)
    except ApiFailure as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from None
    finally:
        client.close()
    if as_json:
        for o in outcomes:
            typer.echo(json.dumps({"path": str(o.path), "video_id": o.video_id, "result": o.status, "detail": o.detail}))
    else:
        Console().print(outcome_table(outcomes))
    if any(o.status == "rejected" for o in outcomes):
        raise typer.Exit(1)


@app.command()
def videos(
    api: ApiOpt = None,
    token: TokenOpt = None,
    status: Annotated[Optional[str], typer.Option(help="stored | ingested")] = None,
) -> None:
    """List ingested videos."""
    from rich.table import Table

    client = WorldloomClient(api, token)
    try:
        items = client.list_videos(status)
    except ApiFailure as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from None
    table = Table(title=f"{len(items)} videos")
    for col in ("video id", "file", "status", "size", "resolution", "duration"):
        table.add_column(col)
    for v in items:
        i = v["info"]
        table.add_row(v["video_id"][:12], v["filename"], v["status"], f"{v['size_bytes'] / 1e6:.1f} MB",
                      f"{i['width']}x{i['height']}@{i['fps']:.2f}", f"{i['duration_s']:.1f}s")
    Console().print(table)


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="folder of real videos (the repo's ../shared/data)")] = Path("../shared/data"),
    out: Annotated[Path, typer.Option(help="output folder (store, report)")] = Path("out/demo"),
) -> None:
    """Run the pipeline in embedded mode: in-process bus, local directory store, Milvus Lite."""
    from worldloom.cli.demo import run_demo

    if not data.is_dir():
        raise typer.BadParameter(f"data folder not found: {data}")
    run_demo(data, out, console)


if __name__ == "__main__":
    app()
