"""`worldloom ingest PATH...`: upload local videos to the ingest API with a progress bar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from worldloom.cli.client import ApiFailure, WorldloomClient

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".ts", ".mpg", ".mpeg"}


@dataclass
class UploadOutcome:
    path: Path
    video_id: str | None
    status: str  # "new" | "duplicate" | "rejected"
    detail: str
    info: dict | None = None


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; directories searched recursively for video files, sorted for a stable order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return out


def upload_all(
    client: WorldloomClient,
    files: list[Path],
    console: Console,
    attributes: dict[Path, dict[str, str]] | None = None,
    arrays: dict[Path, dict[str, tuple[str, bytes]]] | None = None,
) -> list[UploadOutcome]:
    """Uploads ``files`` one by one under one progress bar, each with its ``attributes`` and episode ``arrays``."""
    outcomes: list[UploadOutcome] = []
    total = sum(f.stat().st_size for f in files)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"uploading {len(files)} files", total=total)
        for f in files:
            progress.update(task, description=f"{f.name[:32]:<32}")
            try:
                res = client.upload_video(f, (attributes or {}).get(f), lambda n: progress.advance(task, n),
                                          (arrays or {}).get(f))
            except ApiFailure as exc:
                outcomes.append(UploadOutcome(f, None, "rejected", f"{exc.code}: {exc.message}"))
                continue
            video = res["video"]
            info = video["info"]
            with_arrays = f", arrays {'+'.join(sorted((arrays or {})[f]))}" if (arrays or {}).get(f) else ""
            outcomes.append(UploadOutcome(
                f, video["video_id"], "duplicate" if res["duplicate"] else "new",
                f"{info['width']}x{info['height']} {info['fps']:.2f} fps {info['duration_s']:.1f}s "
                f"{info['frame_count']} frames {info['codec']}{with_arrays}",
                info,
            ))
        progress.update(task, description="done")
    return outcomes


def outcome_table(outcomes: list[UploadOutcome]) -> Table:
    table = Table(title="ingest")
    for col in ("file", "video id", "result", "details"):
        table.add_column(col, overflow="ellipsis", no_wrap=col != "details")
    colours = {"new": "green", "duplicate": "yellow", "rejected": "red"}
    for o in outcomes:
        table.add_row(short_path(o.path), (o.video_id or "-")[:12], f"[{colours[o.status]}]{o.status}", o.detail)
    return table


def short_path(path: Path) -> str:
    parts = path.parts
    return str(Path(*parts[-3:])) if len(parts) > 3 else str(path)
