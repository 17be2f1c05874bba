"""What the demo's tokenizer and world-model stages both read from the store: curated clips, the
held-out split, and progress bars that wait for the services' markers."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from worldloom.core.catalog import TRAIN_RENDITION, ClipRecord, curated_marker_key, iter_clip_records
from worldloom.core.selection import SelectedClip, Selection
from worldloom.core.store.local import LocalStore

#: curated clips are at most CurationConfig.max_clip_s (10 s) at the source frame rate: encode them whole
DEMO_ENCODE_MAX_FRAMES = 601


def accepted_clips(store: LocalStore, config_hash: str) -> list[ClipRecord]:
    """The accepted clips curated with ``config_hash`` that have a train rendition, by clip id."""
    recs = []
    for rec in iter_clip_records(store):
        if rec.status == "accepted" and TRAIN_RENDITION in rec.renditions and rec.config_hash == config_hash:
            recs.append(rec)
    return sorted(recs, key=lambda r: r.clip_id)


def heldout_clips(clips: list[ClipRecord], record: dict[str, Any], n: int = 3) -> list[tuple[ClipRecord, str]]:
    """Up to ``n`` of the clips the job held out (the service's own split), else training clips."""
    sel = Selection([SelectedClip(c.clip_id, c.video_id, c.renditions[TRAIN_RENDITION]) for c in clips])
    val_keys = [c.train_key for c in sel.split(float(record["request"]["val_fraction"]))[1]]
    by_key = {c.renditions[TRAIN_RENDITION]: c for c in clips}
    chosen = [(by_key[k], "held out") for k in val_keys if k in by_key]
    chosen += [(c, "train") for c in clips if c.renditions[TRAIN_RENDITION] not in val_keys]
    return chosen[:n]


def wait_for_curation(store: LocalStore, video_ids: list[str], config_hash: str, console: Console) -> None:
    """Counts the curate service's per-video markers for ``config_hash`` until every video is curated."""
    columns = (TextColumn("[bold]curating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("curate", total=len(video_ids))
        while True:
            done = sum(store.exists(curated_marker_key(v, config_hash)) for v in video_ids)
            progress.update(task, completed=done)
            if done == len(video_ids):
                return
            time.sleep(0.5)


def wait_for_tokens(store: LocalStore, tid: str, expected: int, console: Console, stall_s: float = 120.0) -> int:
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
