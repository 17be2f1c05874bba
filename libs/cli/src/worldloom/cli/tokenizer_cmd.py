"""`worldloom tokenizer ...`: train, follow, evaluate and manage video tokenizers on the tokenize service."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worldloom.cli.client import ApiFailure, WorldloomClient
from worldloom.cli.common import TokenizeApiOpt, TokenOpt, connected, console, video_files
from worldloom.cli.ingest_cmd import short_path

tokenizer_app = typer.Typer(help="Train, evaluate and manage video tokenizers (tokenize service).",
                            no_args_is_help=True)

TERMINAL_STATES = ("succeeded", "failed", "cancelled")
# errors about the tokenizer or the request rather than one video: evaluating the other videos is pointless
_FATAL_EVAL_CODES = {"tokenizer_not_found", "no_active_tokenizer", "tokenizer_not_ready", "checkpoint_missing",
                     "checkpoint_corrupt", "bad_resolution", "bad_field"}


class Kind(str, Enum):
    continuous = "continuous"
    discrete = "discrete"


class Compression(str, Enum):
    c4x8x8 = "4x8x8"
    c8x8x8 = "8x8x8"
    c8x16x16 = "8x16x16"


class Size(str, Enum):
    tiny = "tiny"
    small = "small"
    base = "base"
    large = "large"


# ---------------------------------------------------------------------------------- shared helpers


def latest(record: dict[str, Any], curve: str) -> float | None:
    points = (record.get("curves") or {}).get(curve) or []
    return float(points[-1][1]) if points else None


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def _stats(record: dict[str, Any]) -> str:
    loss, psnr = latest(record, "loss"), latest(record, "psnr")
    text = f"loss {loss:.4f}" if loss is not None else "loss -"
    return text + (f"  PSNR {psnr:.2f} dB" if psnr is not None else "")


def follow_training(client: WorldloomClient, tokenizer_id: str, out: Console, poll_s: float = 1.0,
                    record: dict[str, Any] | None = None,
                    fetch: Callable[[str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Polls a training job until it ends, with a progress bar (percent, step/total, latest loss and
    PSNR, the service's ETA); returns the final record. Ctrl-C propagates as KeyboardInterrupt.
    ``fetch`` reads the job record (default: the tokenize service's; ``client.world_job`` for world models)."""
    fetch = fetch or client.tokenizer
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
               TextColumn("step {task.fields[step]}/{task.fields[steps]}"), TextColumn("{task.fields[stats]}"),
               TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn())
    record = record or fetch(tokenizer_id)
    with Progress(*columns, console=out) as progress:
        task = progress.add_task(record["state"], total=100, step=0, steps=record.get("total_steps", 0),
                                 stats="", eta="-:--")
        while True:
            state = record["state"]
            if state == "running" and record.get("total_steps") and record.get("step", 0) >= record["total_steps"]:
                state = "evaluating"  # steps done; held-out metrics and the final model are being written
            progress.update(task, completed=record.get("percent", 0.0), description=f"{state:<10}",
                            step=record.get("step", 0), steps=record.get("total_steps", 0),
                            stats=_stats(record), eta=_eta(record.get("eta_s")))
            if record["state"] in TERMINAL_STATES:
                return record
            time.sleep(poll_s)
            record = fetch(tokenizer_id)


def follow_or_detach(client: WorldloomClient, job_id: str, record: dict[str, Any], command: str, *,
                     fetch: Callable[[str], dict[str, Any]] | None = None, poll_s: float = 1.0) -> dict[str, Any]:
    """:func:`follow_training`; Ctrl-C leaves the job running and says how to follow or cancel it (exit 130)."""
    try:
        return follow_training(client, job_id, console, poll_s, record, fetch)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]stopped waiting; {job_id} keeps training on the service.[/]\n"
                      f"  progress: worldloom {command} show {job_id}\n  cancel:   worldloom {command} cancel {job_id}")
        raise typer.Exit(130) from None


def metrics_table(record: dict[str, Any], title: str | None = None) -> Table:
    table = Table(title=title or f"tokenizer {record['tokenizer_id']} ({record['state']})", title_justify="left",
                  min_width=44)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted((record.get("metrics") or {}).items()):
        value = float(value)
        table.add_row(name, f"{value:.0f}" if value.is_integer() else f"{value:.4f}")
    for curve in ("loss", "psnr"):
        if (v := latest(record, curve)) is not None:
            table.add_row(f"last train {curve}", f"{v:.4f}")
    return table


def _config_summary(record: dict[str, Any]) -> str:
    cfg, req = record.get("config") or {}, record.get("request") or {}
    parts = [cfg.get("kind", "?"), cfg.get("size", "?"), cfg.get("compression", "?")]
    if req:
        parts.append(f"{req.get('resolution')}px {req.get('frames')} frames, batch {req.get('batch')}")
    return " ".join(str(p) for p in parts)


def record_table(record: dict[str, Any]) -> Table:
    """Everything `show` prints about one tokenizer: state, config, progress, lineage, error."""
    table = Table(title=f"tokenizer {record['tokenizer_id']}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(record["state"], "cyan")
    rows = [
        ("name", record.get("name", "")),
        ("state", f"[{colour}]{record['state']}[/]" + (" [bold green](active)[/]" if record.get("active") else "")),
        ("source", record.get("source", "trained")),
        ("config", _config_summary(record)),
        ("progress", f"{record.get('percent', 0.0):.1f}%  step {record.get('step', 0)}/{record.get('total_steps', 0)}"
                     + (f"  ETA {_eta(record['eta_s'])}" if record.get("eta_s") and record["state"] == "running" else "")),
        ("latest", _stats(record)),
    ]
    if record.get("resumed_from_step"):
        rows.append(("resumed from", ", ".join(map(str, record["resumed_from_step"]))))
    lineage = record.get("lineage") or {}
    if lineage.get("dataset"):
        rows.append(("dataset", f"{lineage['dataset']}  {lineage.get('dataset_uri') or ''}"))
    if lineage.get("clip_filter"):
        flt = {k: v for k, v in lineage["clip_filter"].items() if v not in (None, [], "")}
        rows.append(("clip filter", json.dumps(flt)))
    if lineage.get("imported_from"):
        rows.append(("imported from", lineage["imported_from"]))
    if lineage.get("train_clips") or lineage.get("val_clips"):
        rows.append(("clips", f"{lineage.get('train_clips', 0)} train, {lineage.get('val_clips', 0)} held out"))
    if lineage.get("clip_ids_sha256"):
        rows.append(("clip ids sha256", lineage["clip_ids_sha256"]))
    if record.get("model_uri"):
        rows.append(("model", record["model_uri"]))
    rows.append(("created", str(record.get("created_at", ""))))
    if record.get("error"):
        rows.append(("error", f"[red]{record['error']}"))
    for k, v in rows:
        table.add_row(k, str(v))
    return table


# ---------------------------------------------------------------------------------- commands


def dataset_ref(value: str) -> dict[str, Any]:
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:@v?(\d+))?", value)
    if not m:
        raise typer.BadParameter(f"--dataset takes NAME or NAME@VERSION, got {value!r}")
    return {"name": m.group(1), "version": int(m.group(2)) if m.group(2) else None}


@tokenizer_app.command("train")
def train(
    clips_source: Annotated[Optional[str], typer.Option(
        "--clips-source", help='train on the accepted curated clips of this source ("*": every source)')] = None,
    dataset: Annotated[Optional[str], typer.Option(
        "--dataset", help="or on a saved dataset manifest: NAME or NAME@VERSION (latest when omitted)")] = None,
    clips_tag: Annotated[Optional[list[str]], typer.Option(
        "--clips-tag", help="with --clips-source: clips must have this tag")] = None,
    clips_limit: Annotated[int, typer.Option("--clips-limit", help="with --clips-source: at most this many clips")] = 1000,
    name: Annotated[str, typer.Option(help="a name for the registry")] = "tokenizer",
    kind: Annotated[Kind, typer.Option(help="continuous latents or discrete FSQ tokens")] = Kind.continuous,
    compression: Annotated[Compression, typer.Option(help="time x height x width compression")] = Compression.c4x8x8,
    size: Annotated[Size, typer.Option(help="model size preset")] = Size.tiny,
    resolution: Annotated[int, typer.Option(help="square training resolution, pixels")] = 64,
    frames: Annotated[int, typer.Option(help="frames per training sample: 1 + k * temporal compression")] = 17,
    steps: Annotated[int, typer.Option(help="training steps")] = 500,
    batch: Annotated[int, typer.Option(help="clips per step")] = 4,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 1e-3,
    workers: Annotated[int, typer.Option(help="Ray Train workers (data parallel)")] = 1,
    gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker")] = False,
    seed: Annotated[int, typer.Option(help="seed of the weights and the data order")] = 0,
    activate: Annotated[bool, typer.Option("--activate", help="activate it once trained (encodes every clip)")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="start the job and return")] = False,
    poll_s: Annotated[float, typer.Option("--poll", help="seconds between status polls")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the final record as JSON")] = False,
    api: TokenizeApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Train a tokenizer on curated clips (or a dataset) and follow the job with a progress bar."""
    if (clips_source is None) == (dataset is None):
        raise typer.BadParameter("give --clips-source SOURCE (\"*\" for every source) or --dataset NAME[@V]")
    body: dict[str, Any] = {
        "name": name, "kind": kind.value, "compression": compression.value, "size": size.value,
        "resolution": resolution, "frames": frames, "steps": steps, "batch": batch, "lr": lr, "workers": workers,
        "use_gpu": gpu, "seed": seed, "activate": activate,
    }
    if dataset is not None:
        body["dataset"] = dataset_ref(dataset)
    else:
        body["clips"] = {"source": None if clips_source in ("*", "") else clips_source, "tags": clips_tag or [],
                         "limit": clips_limit}
    with connected("tokenize", api, token) as client:
        record = client.train_tokenizer(body)
        tid = record["tokenizer_id"]
        lineage = record.get("lineage") or {}
        console.print(f"started [bold]{tid}[/] ({_config_summary(record)}) on {lineage.get('train_clips', 0)} "
                      f"clips, {lineage.get('val_clips', 0)} held out")
        if no_wait:
            if as_json:
                typer.echo(json.dumps(record, indent=2))
            else:
                typer.echo(tid)
            console.print(f"follow it with: worldloom tokenizer show {tid}")
            return
        record = follow_or_detach(client, tid, record, "tokenizer", poll_s=poll_s)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
    else:
        Console().print(metrics_table(record))
        typer.echo(tid)
    if record["state"] != "succeeded":
        console.print(f"[red]training {record['state']}" + (f": {record['error']}" if record.get("error") else ""))
        raise typer.Exit(1)
    if record.get("active"):
        console.print(f"[green]{tid} is active[/]: the service is encoding every accepted curated clip")


@dataclass
class EvalRow:
    path: str
    psnr: float | None = None
    ssim: float | None = None
    frames: int | None = None
    resolution: int | None = None
    error: str | None = None


def evaluate_files(client: WorldloomClient, files: list[Path], tokenizer_id: str | None, resolution: int | None,
                   out: Console) -> tuple[str | None, list[EvalRow]]:
    """POSTs every file to /v1/evaluate; a video the service refuses becomes a row with the reason.

    Errors that concern the tokenizer or the request (unknown id, not trained, bad resolution, auth)
    are raised: they would refuse every video alike.
    """
    rows: list[EvalRow] = []
    used = tokenizer_id
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=True) as progress:
        task = progress.add_task("evaluating", total=len(files))
        for f in files:
            progress.update(task, description=f"{f.name[:32]:<32}")
            try:
                res = client.evaluate_video(f, tokenizer_id, resolution)
            except ApiFailure as exc:
                if exc.status in (401, 403) or exc.code in _FATAL_EVAL_CODES:
                    raise
                rows.append(EvalRow(str(f), error=f"{exc.code}: {exc.message}"))
            else:
                used = res["tokenizer_id"]
                rows.append(EvalRow(str(f), res["psnr"], res["ssim"], res["frames"], res["resolution"]))
            progress.advance(task)
    return used, rows


def eval_summary(rows: list[EvalRow]) -> dict[str, Any]:
    ok = [r for r in rows if r.error is None]  # these have every score (the filters only narrow the type)
    if not ok:
        return {"videos": 0, "psnr": None, "ssim": None, "frames": 0}
    psnr = [r.psnr for r in ok if r.psnr is not None]
    ssim = [r.ssim for r in ok if r.ssim is not None]
    return {"videos": len(ok), "psnr": sum(psnr) / len(ok), "ssim": sum(ssim) / len(ok),
            "frames": sum(r.frames for r in ok if r.frames is not None)}


def eval_table(tokenizer_id: str | None, rows: list[EvalRow]) -> Table:
    res = next((r.resolution for r in rows if r.resolution), None)
    table = Table(title=f"reconstruction with {tokenizer_id or 'the active tokenizer'}"
                        + (f" at {res}x{res}" if res else ""), title_justify="left")
    table.add_column("video", overflow="fold")
    for col in ("frames", "PSNR (dB)", "SSIM"):
        table.add_column(col, justify="right")
    table.add_column("result", overflow="fold")
    for r in rows:
        if r.error is None:
            table.add_row(short_path(Path(r.path)), str(r.frames), f"{r.psnr:.2f}", f"{r.ssim:.4f}", "[green]ok")
        else:
            table.add_row(short_path(Path(r.path)), "-", "-", "-", f"[red]rejected: {r.error}")
    mean = eval_summary(rows)
    table.add_section()
    table.add_row(f"[bold]mean of {mean['videos']} video(s)", str(mean["frames"]),
                  f"[bold]{mean['psnr']:.2f}" if mean["psnr"] is not None else "-",
                  f"[bold]{mean['ssim']:.4f}" if mean["ssim"] is not None else "-",
                  f"{len(rows) - mean['videos']} rejected" if len(rows) > mean["videos"] else "")
    return table


@tokenizer_app.command("eval")
def eval_(
    paths: Annotated[list[Path], typer.Argument(help="video files or folders (searched recursively)")],
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", "-t", help="tokenizer id (default: the active one)")] = None,
    resolution: Annotated[Optional[int], typer.Option(help="square size to evaluate at (default: its training size)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    api: TokenizeApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Reconstruction PSNR/SSIM of local videos (encode + decode on the service); exit 1 if any is rejected."""
    files = video_files(paths)
    with connected("tokenize", api, token) as client:
        used, rows = evaluate_files(client, files, tokenizer, resolution, console)
    if as_json:
        typer.echo(json.dumps({"tokenizer_id": used, "videos": [asdict(r) for r in rows], "mean": eval_summary(rows)},
                              indent=2))
    else:
        Console().print(eval_table(used, rows))
    if any(r.error for r in rows):
        raise typer.Exit(1)


@tokenizer_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    api: TokenizeApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """The registry: every tokenizer with state, config and held-out metrics (newest first)."""
    with connected("tokenize", api, token) as client:
        items = client.list_tokenizers()
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table(title=f"{len(items)} tokenizers")
    for col in ("id", "name", "state", "done", "config", "steps", "PSNR", "SSIM", "active", "created"):
        table.add_column(col, justify="right" if col in ("done", "steps", "PSNR", "SSIM") else "left",
                         no_wrap=col in ("id", "created"))
    for r in items:
        m = r.get("metrics") or {}
        psnr = m.get("val_psnr", m.get("train_psnr"))
        ssim = m.get("val_ssim", m.get("train_ssim"))
        cfg = r.get("config") or {}
        table.add_row(r["tokenizer_id"], r.get("name", ""), r["state"], f"{r.get('percent', 0):.0f}%",
                      f"{cfg.get('kind', '?')} {cfg.get('size', '?')} {cfg.get('compression', '?')}",
                      str(r.get("total_steps") or "-"), f"{psnr:.2f}" if psnr is not None else "-",
                      f"{ssim:.3f}" if ssim is not None else "-", "[bold green]*" if r.get("active") else "",
                      str(r.get("created_at", ""))[:16].replace("T", " "))
    Console().print(table)


@tokenizer_app.command("show")
def show(
    tokenizer_id: Annotated[str, typer.Argument(help="tokenizer id (tok-...)")],
    as_json: Annotated[bool, typer.Option("--json", help="print the record as JSON")] = False,
    api: TokenizeApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """State, progress, final metrics and lineage of one tokenizer."""
    with connected("tokenize", api, token) as client:
        record = client.tokenizer(tokenizer_id)
    if as_json:
        typer.echo(json.dumps(record, indent=2))
        return
    out = Console()
    out.print(record_table(record))
    if record.get("metrics") or record.get("curves"):
        out.print(metrics_table(record, title="metrics"))


@tokenizer_app.command("activate")
def activate(
    tokenizer_id: Annotated[str, typer.Argument(help="a tokenizer whose training succeeded")],
    api: TokenizeApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Make this tokenizer encode every clips.curated event; the service also backfills curated clips."""
    with connected("tokenize", api, token) as client:
        record = client.activate_tokenizer(tokenizer_id)
    console.print(f"[green]{record['tokenizer_id']} is active[/]: every accepted curated clip is being encoded "
                  f"into tokens/{record['tokenizer_id']}/ (clips.tokenized events)")


@tokenizer_app.command("cancel")
def cancel(
    tokenizer_id: Annotated[str, typer.Argument(help="a queued or running training job")],
    api: TokenizeApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Cancel a queued or running training job (workers stop at their next log step)."""
    with connected("tokenize", api, token) as client:
        record = client.cancel_tokenizer(tokenizer_id)
    console.print(f"{record['tokenizer_id']}: cancel requested (state {record['state']}, "
                  f"step {record.get('step', 0)}/{record.get('total_steps', 0)})")

