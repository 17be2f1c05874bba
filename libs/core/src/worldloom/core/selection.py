"""Choosing training clips: a saved dataset manifest or a filter over accepted curated clips.

Every training service (tokenize, train) selects data the same way and records the same lineage, so
this lives here once. Held-out clips are whole source videos chosen by a hash of the video id: stable
across runs, replicas and restarts, independent of listing order, and never a neighbour of a training clip.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from worldloom.core.catalog import (
    TRAIN_RENDITION,
    DatasetManifest,
    dataset_key,
    iter_clip_records,
    read_clip,
    read_dataset,
)
from worldloom.core.errors import Refusal
from worldloom.core.store.base import InvalidKey, ObjectNotFound, ObjectStore


class SelectionError(Refusal):
    """The dataset or clip filter selects nothing usable."""


class DatasetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    version: int | None = Field(None, ge=1, description="latest when omitted")


class ClipFilter(BaseModel):
    """Accepted curated clips, optionally narrowed by source, tags (all must match) and curation config."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = None
    tags: list[str] = []
    config_hash: str | None = None
    limit: int = Field(1000, ge=1, le=100_000)


@dataclass(frozen=True)
class SelectedClip:
    clip_id: str
    video_id: str
    train_key: str  # object key of the square training rendition


@dataclass
class Selection:
    clips: list[SelectedClip]
    dataset: str | None = None  # name@vN
    dataset_uri: str | None = None
    clip_filter: dict[str, Any] | None = None
    ids_sha256: str = ""
    label: str = field(default="")

    def split(self, val_fraction: float) -> tuple[list[SelectedClip], list[SelectedClip]]:
        """(train, held-out), split by **source video**: every clip of a video (adjacent shots, pieces of
        one long shot, one simulator episode) is on the same side, so held-out figures measure footage the
        model never saw. Videos are ranked by a hash of their id (stable across runs, replicas and listing
        order) and held out until ``val_fraction`` of the clips are; at least one video stays for training.
        Nothing is held out with fraction 0 or fewer than two videos."""
        groups: dict[str, list[SelectedClip]] = {}
        for clip in self.clips:
            groups.setdefault(clip.video_id or clip.clip_id, []).append(clip)
        if len(groups) < 2 or val_fraction <= 0:
            return list(self.clips), []
        ranked = sorted(groups, key=lambda v: hashlib.sha256(v.encode()).hexdigest())
        want = max(1, round(len(self.clips) * val_fraction))
        held: set[str] = set()
        count = 0
        for video in ranked[:-1]:
            if count >= want:
                break
            held.add(video)
            count += len(groups[video])
        train = [c for c in self.clips if (c.video_id or c.clip_id) not in held]
        val = [c for c in self.clips if (c.video_id or c.clip_id) in held]
        return train, val


def _manifest(store: ObjectStore, name: str, version: int | None) -> DatasetManifest:
    try:
        return read_dataset(store, name, version)
    except (ObjectNotFound, InvalidKey):
        raise SelectionError(404, "dataset_not_found",
                             f"no dataset {name!r}" + (f" version {version}" if version else "")) from None


def select_clips(store: ObjectStore, dataset: DatasetRef | None, clips: ClipFilter | None,
                 max_clips: int = 100_000) -> Selection:
    if (dataset is None) == (clips is None):
        raise SelectionError(422, "bad_selection", "give exactly one of 'dataset' or 'clips'")
    chosen: list[SelectedClip] = []
    if dataset is not None:
        manifest = _manifest(store, dataset.name, dataset.version)
        for c in manifest.clips:
            uri = (c.get("renditions") or {}).get(TRAIN_RENDITION)
            if uri:
                chosen.append(SelectedClip(c["clip_id"], c.get("video_id", ""), store.key_from_uri(uri)))
        sel = Selection(chosen, dataset=f"{manifest.name}@v{manifest.version}",
                        dataset_uri=store.uri(dataset_key(manifest.name, manifest.version)))
        sel.label = sel.dataset or ""
    else:
        assert clips is not None
        for rec in iter_clip_records(store):
            if rec.status != "accepted" or TRAIN_RENDITION not in rec.renditions:
                continue
            if clips.source and rec.source != clips.source or clips.config_hash and rec.config_hash != clips.config_hash:
                continue
            if not set(clips.tags) <= set(rec.tags):
                continue
            chosen.append(SelectedClip(rec.clip_id, rec.video_id, rec.renditions[TRAIN_RENDITION]))
            if len(chosen) >= clips.limit:
                break
        sel = Selection(chosen, clip_filter=clips.model_dump())
        sel.label = "clips:" + ",".join(f"{k}={v}" for k, v in clips.model_dump(exclude_defaults=True).items())
    if not chosen:
        raise SelectionError(422, "no_clips", "the dataset/filter selects no accepted clips with a training rendition")
    if len(chosen) > max_clips:
        raise SelectionError(422, "too_many_clips", f"{len(chosen)} clips; the limit is {max_clips}")
    sel.clips.sort(key=lambda c: c.clip_id)
    sel.ids_sha256 = hashlib.sha256("\n".join(c.clip_id for c in sel.clips).encode()).hexdigest()
    return sel


def select_clip_ids(store: ObjectStore, clip_ids: list[str], max_clips: int = 100_000) -> Selection:
    """The accepted clips with a training rendition among ``clip_ids`` (e.g. a search's hits, before they
    are saved as a dataset); the caller labels the selection."""
    chosen = []
    for cid in dict.fromkeys(clip_ids):
        try:
            rec = read_clip(store, cid)
        except (ObjectNotFound, InvalidKey):
            continue
        if rec.status == "accepted" and TRAIN_RENDITION in rec.renditions:
            chosen.append(SelectedClip(rec.clip_id, rec.video_id, rec.renditions[TRAIN_RENDITION]))
    if not chosen:
        raise SelectionError(422, "no_clips", "none of the clips is an accepted clip with a training rendition")
    if len(chosen) > max_clips:
        raise SelectionError(422, "too_many_clips", f"{len(chosen)} clips; the limit is {max_clips}")
    chosen.sort(key=lambda c: c.clip_id)
    return Selection(chosen, ids_sha256=hashlib.sha256("\n".join(c.clip_id for c in chosen).encode()).hexdigest())


def uncaptioned(store: ObjectStore, clips: list[SelectedClip]) -> list[str]:
    """Ids of the clips without a caption (text conditioning needs one on every clip)."""
    missing = []
    for clip in clips:
        try:
            record = read_clip(store, clip.clip_id)
        except ObjectNotFound:
            record = None
        if record is None or not record.caption.strip():
            missing.append(clip.clip_id)
    return missing
