"""Curated clips in a store, as the curate service leaves them for the tokenize, train and generate services:
the train rendition under ``clips/<id>/`` and an accepted ``ClipRecord`` next to it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from worldloom.core.catalog import TRAIN_RENDITION, ClipRecord, clip_meta_key
from worldloom.core.store.base import ObjectStore
from worldloom.video.synthetic import write_video


def put_clip(store: ObjectStore, clip_id: str, video: Path, *, frames: int, fps: float, width: int, height: int,
             video_id: str, source: str = "synthetic", config_hash: str = "h") -> ClipRecord:
    """``video`` (``frames`` frames of ``width`` x ``height`` at ``fps``) as clip ``clip_id``'s train rendition,
    and its accepted record; returns the record."""
    key = f"clips/{clip_id}/{TRAIN_RENDITION}"
    store.put_bytes(key, video.read_bytes())
    rec = ClipRecord(clip_id=clip_id, video_id=video_id, source=source, status="accepted", start_frame=0,
                     end_frame=frames, start_s=0, end_s=frames / fps, duration_s=frames / fps, fps=fps, width=width,
                     height=height, renditions={TRAIN_RENDITION: key},
                     rendition_info={TRAIN_RENDITION: {"width": width, "height": height}}, config_hash=config_hash,
                     created_at=datetime.now(timezone.utc))
    store.put_bytes(clip_meta_key(clip_id), rec.model_dump_json().encode(), "application/json")
    return rec


def synthetic_clip(store: ObjectStore, tmp: Path, i: int, frames: int = 24, size: int = 48) -> ClipRecord:
    """Clip ``clip<i>`` of video ``v<i>`` (source "synthetic"): a moving pattern, ``size`` x ``size`` at 24 fps,
    seeded by ``i``; ``tmp`` holds the mp4 on the way."""
    path = write_video(tmp / f"c{i}.mp4", width=size, height=size, frames=frames, seed=i)
    return put_clip(store, f"clip{i}", path, frames=frames, fps=24, width=size, height=size, video_id=f"v{i}")
