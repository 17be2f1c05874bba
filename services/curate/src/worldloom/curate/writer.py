"""The last stage: renditions and webdataset shards to the object store, vectors to Milvus, then the clip
records that make them visible, then one clips.curated event per accepted clip.

Every key is derived from the clip id (a hash of video id, span and config hash), so writing the same
video again overwrites identical objects and upserts identical rows: a redelivered event changes nothing.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

import webdataset as wds

from worldloom.core import events
from worldloom.core.bus import Bus
from worldloom.core.catalog import (
    TEXT_COLLECTION,
    TRAIN_RENDITION,
    VISUAL_COLLECTION,
    ClipRecord,
    clip_file_key,
    clip_meta_key,
    clip_row,
    shard_key,
)
from worldloom.core.store import ObjectStore
from worldloom.core.vectors import VectorIndex
from worldloom.video.pipeline import ClipTask, Resources, Stage, VideoTask

log = logging.getLogger("worldloom.curate.write")

CONTENT_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg", ".gif": "image/gif", ".json": "application/json"}


def length_bucket(duration_s: float) -> str:
    for upper, name in ((2.0, "0-2s"), (5.0, "2-5s"), (10.0, "5-10s"), (30.0, "10-30s")):
        if duration_s < upper:
            return name
    return "30s+"


def source_of(task: VideoTask) -> str:
    return task.attributes.get("dataset") or task.attributes.get("source") or "upload"


@dataclass
class WriteStage(Stage):
    """Owns every output path of a clip: renditions, record, shard, vector rows, event."""

    name: ClassVar[str] = "write"
    inputs = (
        "clips", "filtered_clips", "clip.renditions", "clip.rendition_info", "clip.scores", "clip.caption",
        "clip.visual_embedding", "clip.text_embedding",
    )
    outputs = ("records", "shard_keys")
    resources = Resources(cpus=0.5, memory_mb=256)

    store: ObjectStore
    index: VectorIndex
    bus: Bus
    config_hash: str
    shard_max_clips: int = 256
    train_rendition: str = TRAIN_RENDITION

    def process(self, task: VideoTask) -> None:
        """Outputs first (shards, renditions, vector rows), then the records that make them visible, then
        the events: a failure anywhere leaves no record pointing at missing outputs and no event announcing
        one, and the redelivery (no marker yet) writes the same keys and rows again."""
        now = datetime.now(timezone.utc)
        accepted = task.clips
        shard_of = self._write_shards(task, accepted)
        records = []
        for clip in task.all_clips():
            keys = {}
            if clip.accepted:
                for name, path in clip.renditions.items():
                    key = clip_file_key(clip.clip_id, name)
                    with open(path, "rb") as f:
                        self.store.put_file(key, f, Path(path).stat().st_size,
                                            CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"))
                    keys[name] = key
            records.append(self._record(task, clip, keys, shard_of.get(clip.clip_id), now))
        self._upsert_vectors(accepted, {r.clip_id: r for r in records})
        for record in records:
            self.store.put_record(clip_meta_key(record.clip_id), record)
        for record in records:
            if record.status == "accepted":
                self._emit(record)
        self.bus.flush()  # raises unless every clips.curated event was acknowledged: no marker then
        task.records = records
        task.shard_keys = sorted(set(shard_of.values()))

    def _record(self, task: VideoTask, clip: ClipTask, keys: dict[str, str], shard: str | None,
                now: datetime) -> ClipRecord:
        span = clip.span
        width, height = int(task.info.get("width", 0)), int(task.info.get("height", 0))
        if int(task.info.get("rotation", 0)) % 180 == 90:
            width, height = height, width
        return ClipRecord(
            clip_id=clip.clip_id, video_id=task.video_id, source=source_of(task),
            status="accepted" if clip.accepted else "rejected",
            start_frame=span.start_frame, end_frame=span.end_frame, start_s=round(span.start_s, 4),
            end_s=round(span.end_s, 4), duration_s=round(span.end_s - span.start_s, 4),
            fps=float(task.info.get("fps") or 0.0), width=width, height=height,
            caption=clip.caption, caption_source=clip.caption_source, tags=clip.tags,
            scores={k: round(float(v), 5) for k, v in clip.scores.items()}, descriptors=clip.descriptors,
            rejections=clip.rejections, duplicate_of=clip.duplicate_of,
            phash=[f"{h:016x}" for h in clip.phash], renditions=keys,
            rendition_info=clip.rendition_info if keys else {},
            shard=shard, config_hash=self.config_hash, created_at=now,
        )

    def _write_shards(self, task: VideoTask, accepted: list[ClipTask]) -> dict[str, str]:
        """Groups training renditions by (resolution, length) bucket into webdataset tar shards."""
        buckets: dict[str, list[ClipTask]] = {}
        for clip in accepted:
            if self.train_rendition not in clip.renditions:
                continue
            size = clip.rendition_info.get(self.train_rendition, {})
            bucket = f"{int(size.get('width', 0))}x{int(size.get('height', 0))}/{length_bucket(clip.span.end_s - clip.span.start_s)}"
            buckets.setdefault(bucket, []).append(clip)
        shard_of: dict[str, str] = {}
        for bucket, clips in sorted(buckets.items()):
            for n in range(0, len(clips), self.shard_max_clips):
                part = clips[n : n + self.shard_max_clips]
                key = shard_key(self.config_hash, bucket, task.video_id, n // self.shard_max_clips)
                buf = io.BytesIO()
                with wds.TarWriter(buf) as sink:
                    for clip in part:
                        sink.write({
                            "__key__": clip.clip_id,
                            "mp4": Path(clip.renditions[self.train_rendition]).read_bytes(),
                            "txt": clip.caption,
                            "json": json.dumps({
                                "clip_id": clip.clip_id, "video_id": task.video_id, "caption": clip.caption,
                                "tags": clip.tags, "start_s": clip.span.start_s, "end_s": clip.span.end_s,
                                "scores": clip.scores, "attributes": task.attributes,
                            }).encode(),
                        })
                self.store.put_bytes(key, buf.getvalue(), "application/x-tar")
                for clip in part:
                    shard_of[clip.clip_id] = key
        return shard_of

    def _upsert_vectors(self, accepted: list[ClipTask], records: dict[str, ClipRecord]) -> None:
        visual, text = [], []
        for clip in accepted:
            r = records[clip.clip_id]
            if clip.visual_embedding is not None:
                visual.append(clip_row(r, "clip", r.clip_id, clip.visual_embedding))
                for k, vec in enumerate(clip.keyframe_embeddings if clip.keyframe_embeddings is not None else []):
                    visual.append(clip_row(r, "frame", f"{r.clip_id}:{k}", vec))
            if clip.text_embedding is not None:
                text.append(clip_row(r, "caption", r.clip_id, clip.text_embedding))
        self.index.upsert(VISUAL_COLLECTION, visual)
        self.index.upsert(TEXT_COLLECTION, text)

    def _emit(self, r: ClipRecord) -> None:
        payload = events.ClipCurated(
            clip_id=r.clip_id, video_id=r.video_id, start_frame=r.start_frame, end_frame=r.end_frame,
            start_s=r.start_s, end_s=r.end_s, config_hash=r.config_hash,
            metadata_uri=self.store.uri(clip_meta_key(r.clip_id)),
            renditions={k: self.store.uri(v) for k, v in r.renditions.items()},
            shard_uri=self.store.uri(r.shard) if r.shard else "", caption=r.caption, tags=r.tags,
            width=int(r.rendition_info.get(self.train_rendition, {}).get("width", 0)),
            height=int(r.rendition_info.get(self.train_rendition, {}).get("height", 0)),
            fps=float(r.rendition_info.get(self.train_rendition, {}).get("fps", r.fps)),
        )
        event = events.new_event("curate", payload, lineage=[r.video_id, r.config_hash],
                                 event_id=events.effect_id(events.TOPIC_CLIPS_CURATED, r.clip_id, r.config_hash))
        self.bus.publish(events.TOPIC_CLIPS_CURATED, event, key=r.clip_id, wait=False)
