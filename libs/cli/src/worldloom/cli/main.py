"""The `worldloom` command line.

Commands of other packages join through the ``worldloom.cli.commands`` entry-point group (name = the
command, value = a typer command function), e.g. `worldloom demo` from worldloom-demo: those packages
build on the CLI's client, so the CLI must not import them.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from worldloom.cli.client import WorldloomClient
from worldloom.cli.common import IngestApiOpt, SearchApiOpt, TokenOpt, connected, console, video_files
from worldloom.cli.episodes_cmd import load_episodes
from worldloom.cli.ingest_cmd import UploadOutcome, outcome_table, upload_all
from worldloom.cli.posttrain_cmd import posttrain
from worldloom.cli.rl_cmd import rl_app
from worldloom.cli.tokenizer_cmd import tokenizer_app
from worldloom.cli.world_cmd import predict
from worldloom.cli.world_train_cmd import model_app  # `model eval` plus train | show | cancel

app = typer.Typer(help="Worldloom: build world foundation models from video.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(model_app, name="model")
app.add_typer(rl_app, name="rl")
app.command("predict")(predict)
app.command("posttrain")(posttrain)


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
    paths: Annotated[Optional[list[Path]], typer.Argument(help="video files or folders (searched recursively)")] = None,
    api: IngestApiOpt = None,
    token: TokenOpt = None,
    attr: Annotated[Optional[list[str]], typer.Option("--attr", help="KEY=VALUE stored with every video")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print results as JSON lines")] = False,
    env: Annotated[Optional[str], typer.Option("--env", help="record Gymnasium episodes instead, e.g. CartPole-v1")] = None,
    episodes: Annotated[Optional[str], typer.Option(
        help="with --env: episodes to record (default 1); without: a folder of robot episodes to import with their "
             "actions (annotation/<split>/<id>.json + videos/<split>/<id>/rgb.mp4)")] = None,
    policy: Annotated[str, typer.Option(help='with --env: "random", "constant:<json>", or "scripted[:<noise>]" (Reacher-v5, Pusher-v5)')] = "random",
    seed: Annotated[int, typer.Option(help="with --env: seed of episode 0 (episode k uses seed+k)")] = 0,
    max_steps: Annotated[int, typer.Option(help="with --env: steps per episode at most")] = 500,
    env_kwargs: Annotated[Optional[str], typer.Option(
        "--env-kwargs", help='with --env: gymnasium.make arguments as a JSON object, e.g. \'{"width": 64, "height": 64}\' '
                             "(MuJoCo render size)")] = None,
) -> None:
    """Upload videos to the ingest service, import robot episodes with their actions (--episodes DIR), or
    record simulator episodes with their actions (--env)."""
    if env:
        if paths:
            raise typer.BadParameter("give video paths or --env, not both")
        with connected("ingest", api, token) as client:
            job = _record_gymnasium(client, env, _episode_count(episodes), policy, seed, max_steps,
                                    _env_kwargs(env_kwargs))
        _print_gymnasium_job(env, job, as_json)
        return
    attrs = _parse_attrs(attr or [])
    if episodes is not None:
        if paths:
            raise typer.BadParameter("give video paths or --episodes DIR, not both")
        outcomes = _import_episodes(Path(episodes), attrs, api, token)
    elif not paths:
        raise typer.BadParameter("give video files/folders, --episodes DIR, or --env ENV_ID")
    else:
        files = video_files(paths)
        with connected("ingest", api, token) as client:
            outcomes = upload_all(client, files, console, {f: attrs for f in files} if attrs else None)
    if as_json:
        for o in outcomes:
            typer.echo(json.dumps({"path": str(o.path), "video_id": o.video_id, "result": o.status, "detail": o.detail}))
    else:
        Console().print(outcome_table(outcomes))
    if any(o.status == "rejected" for o in outcomes):
        raise typer.Exit(1)


def _episode_count(value: str | None) -> int:
    try:
        return int(value) if value is not None else 1
    except ValueError:
        raise typer.BadParameter(f"with --env, --episodes is a number of episodes, got {value!r}") from None


def _import_episodes(folder: Path, attrs: dict[str, str], api: str | None, token: str | None) -> list[UploadOutcome]:
    """Every episode of ``folder`` uploaded with its arrays (one progress bar), plus the ones refused locally."""
    if not (folder / "annotation").is_dir():
        raise typer.BadParameter(f"{folder} has no annotation/ folder (expected annotation/<split>/<id>.json "
                                 "and videos/<split>/<id>/rgb.mp4)")
    found, refused = load_episodes(folder, attrs)
    if not found and not refused:
        console.print(f"[yellow]no episodes found under {folder}/annotation")
        raise typer.Exit(1)
    with connected("ingest", api, token) as client:
        outcomes = upload_all(client, [e.video for e in found], console, {e.video: e.attributes for e in found},
                              {e.video: e.arrays for e in found})
    return outcomes + refused


def _env_kwargs(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise typer.BadParameter(f"--env-kwargs takes a JSON object, got {text!r}")
    return value


def _record_gymnasium(client: WorldloomClient, env: str, episodes: int, policy: str, seed: int,
                      max_steps: int, env_kwargs: dict | None = None) -> dict:
    """Starts a recording job on the ingest service and follows it with a progress bar; the final job."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    body = {"env": env, "episodes": episodes, "policy": policy, "seed": seed, "max_steps": max_steps,
            "env_kwargs": env_kwargs or {}}
    job = client.start_gymnasium(body)
    with Progress(TextColumn(f"[bold]recording {env}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("record", total=100)
        while job["state"] not in ("succeeded", "failed"):
            time.sleep(0.5)
            job = client.source_job(job["job_id"])
            progress.update(task, completed=job["percent"])
    return job


def _print_gymnasium_job(env: str, job: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(job, indent=2))
    else:
        from rich.table import Table

        table = Table(title=f"{env}: {len(job['episodes'])} episodes ({job['state']})")
        for col in ("episode", "seed", "steps", "video id", "result"):
            table.add_column(col)
        for e in job["episodes"]:
            table.add_row(str(e["episode"]), str(e["seed"]), str(e["steps"]), e["video_id"][:12],
                          "duplicate" if e["duplicate"] else "new")
        Console().print(table)
        for err in job["errors"]:
            console.print(f"[red]episode {err.get('episode')}: {err['code']}: {err['message']}")
    if job["state"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def videos(
    api: IngestApiOpt = None,
    token: TokenOpt = None,
    status: Annotated[Optional[str], typer.Option(help="stored | ingested")] = None,
) -> None:
    """List ingested videos."""
    from rich.table import Table

    with connected("ingest", api, token) as client:
        items = client.list_videos(status)
    table = Table(title=f"{len(items)} videos")
    for col in ("video id", "file", "status", "size", "resolution", "duration"):
        table.add_column(col)
    for v in items:
        i = v["info"]
        table.add_row(v["video_id"][:12], v["filename"], v["status"], f"{v['size_bytes'] / 1e6:.1f} MB",
                      f"{i['width']}x{i['height']}@{i['fps']:.2f}", f"{i['duration_s']:.1f}s")
    Console().print(table)


@app.command()
def scenes(
    path: Annotated[Path, typer.Argument(help="a local video file")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    threshold: Annotated[float, typer.Option(help="content-change score that counts as a cut")] = 27.0,
    min_scene_len: Annotated[int, typer.Option(help="frames; shorter shots merge")] = 15,
) -> None:
    """Print the shot boundaries the curation split stage finds (frame numbers and times)."""
    from rich.table import Table

    from worldloom.video.errors import VideoRejected
    from worldloom.video.split import SplitConfig, detect_shots

    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}")
    with console.status(f"detecting shots in {path.name}"):
        try:
            shots = detect_shots(path, SplitConfig(threshold=threshold, min_scene_len=min_scene_len))
        except VideoRejected as exc:
            console.print(f"[red]{exc.code}: {exc.reason}")
            raise typer.Exit(1) from None
    doc = {
        "path": str(path), "fps": shots.fps, "frames": shots.decoded_frames, "cuts": shots.cuts,
        "error": shots.error,
        "shots": [{"start_frame": s.start_frame, "end_frame": s.end_frame, "start_s": round(s.start_s, 3),
                   "end_s": round(s.end_s, 3)} for s in shots],
    }
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"{path.name}: {len(shots)} shots, cuts at frames {shots.cuts or 'none'}")
    for col in ("#", "start frame", "end frame", "start", "end", "length"):
        table.add_column(col, justify="right")
    for i, s in enumerate(shots, 1):
        table.add_row(str(i), str(s.start_frame), str(s.end_frame), f"{s.start_s:.3f}s", f"{s.end_s:.3f}s",
                      f"{s.end_s - s.start_s:.2f}s")
    Console().print(table)
    if shots.error:
        console.print(f"[yellow]decoding stopped early: {shots.error}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for, in words")],
    api: SearchApiOpt = None,
    token: TokenOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 10,
    source: Annotated[Optional[str], typer.Option(help="only clips from this source")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the curated clips that best match a text query (search service)."""
    filters = {"sources": [source]} if source else {}
    with connected("search", api, token) as client:
        res = client.search({"text": query, "top_k": top_k, "filters": filters})
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    print_hits(query, res["hits"])


def print_hits(query: str, hits: list[dict]) -> None:
    from rich.table import Table

    table = Table(title=f"top {len(hits)} for {query!r}")
    for col in ("score", "clip", "source", "span", "caption"):
        table.add_column(col, overflow="fold" if col == "caption" else "ellipsis")
    for h in hits:
        table.add_row(f"{h['score']:.3f}", h["clip_id"][:12], h["source"], f"{h['start_s']:.1f}-{h['end_s']:.1f}s",
                      h["caption"])
    Console().print(table)


PLUGIN_GROUP = "worldloom.cli.commands"


def _add_plugin_commands() -> None:
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            command = ep.load()
        except Exception as exc:  # a broken add-on must not take `worldloom ingest` down with it
            console.print(f"[yellow]command {ep.name!r} ({ep.value}) is unavailable: {type(exc).__name__}: {exc}")
            continue
        app.command(ep.name)(command)


_add_plugin_commands()


if __name__ == "__main__":
    app()
