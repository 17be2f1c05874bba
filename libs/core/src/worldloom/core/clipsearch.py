"""Searching curated clips and saving the hits as a dataset version: what the search service and the
post-training service (a job's data given as a search) both do, so it lives here once.

The query vector comes from an embedder the caller supplies (text: MiniLM from ``worldloom.models``;
image: the visual embedding from ``worldloom.video``; clip: the clip's own row in the index), so this
module needs neither torch nor a video decoder. A saved dataset is ``datasets/<name>/v<N>.json`` with the
query that made it (the lineage), announced on ``datasets.created``: the manifest, then the event, then
the marker that it was sent (:meth:`ClipSearch.resume` re-announces versions without one).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worldloom.core import events
from worldloom.core.bus import Bus
from worldloom.core.catalog import (
    CLIP_SCALARS,
    TEXT_COLLECTION,
    VISUAL_COLLECTION,
    DatasetManifest,
    dataset_announced_key,
    dataset_key,
    dataset_versions,
    latest_dataset_versions,
    read_clip,
    read_dataset,
)
from worldloom.core.errors import Refusal
from worldloom.core.store import ObjectNotFound, ObjectStore
from worldloom.core.vectors import Hit, VectorIndex

log = logging.getLogger("worldloom.core.clipsearch")
QUERIES = Counter("worldloom_search_queries_total", "Search queries", ["kind"])
QUERY_SECONDS = Histogram("worldloom_search_query_seconds", "Search latency without HTTP", ["kind"])
_VERSION_ATTEMPTS = 50  # racing savers of one name each take the next free version
KEYFRAMES_PER_CLIP = 16  # upper bound of "frame" rows per clip, to over-fetch before grouping

_SAFE = re.compile(r"^[\w .:/@+-]{1,200}$")


def _safe(value: str) -> str:
    """Filter strings end up inside a Milvus expression: allow a plain character set only."""
    if not _SAFE.match(value):
        raise ValueError(f"{value!r} has characters that are not allowed in a filter value")
    return value


class SearchFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_duration_s: float | None = Field(None, ge=0)
    max_duration_s: float | None = Field(None, ge=0)
    sources: list[str] = Field(default_factory=list, max_length=50)
    tags_any: list[str] = Field(default_factory=list, max_length=50, description="clip has at least one")
    video_id: str | None = None
    min_width: int | None = Field(None, ge=0)
    min_height: int | None = Field(None, ge=0)
    min_motion: float | None = None
    max_motion: float | None = None
    min_sharpness: float | None = None

    @field_validator("sources", "tags_any")
    @classmethod
    def _check_list(cls, values: list[str]) -> list[str]:
        return [_safe(v) for v in values]

    @field_validator("video_id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        return None if value is None else _safe(value)

    def expression(self) -> str:
        """The Milvus boolean expression for these filters ('' = no filter)."""
        parts: list[str] = []
        for field, op, value in (
            ("duration_s", ">=", self.min_duration_s), ("duration_s", "<=", self.max_duration_s),
            ("width", ">=", self.min_width), ("height", ">=", self.min_height),
            ("motion", ">=", self.min_motion), ("motion", "<=", self.max_motion),
            ("sharpness", ">=", self.min_sharpness),
        ):
            if value is not None:
                parts.append(f"{field} {op} {float(value)!r}" if field not in ("width", "height") else f"{field} {op} {int(value)}")
        if self.sources:
            parts.append("source in [" + ", ".join(f'"{s}"' for s in self.sources) + "]")
        if self.tags_any:
            parts.append("json_contains_any(tags, [" + ", ".join(f'"{t}"' for t in self.tags_any) + "])")
        if self.video_id:
            parts.append(f'video_id == "{self.video_id}"')
        return " and ".join(parts)


class SearchRequest(BaseModel):
    """Exactly one of text, clip_id or image_base64."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1, max_length=1000)
    clip_id: str | None = Field(None, min_length=1, max_length=128)
    image_base64: str | None = Field(None, max_length=16 * 1024 * 1024, description="a JPEG/PNG image, base64")
    top_k: int = Field(10, ge=1, le=1000)
    filters: SearchFilters = Field(default_factory=SearchFilters)

    @model_validator(mode="after")
    def _one_query(self) -> "SearchRequest":
        given = [k for k in ("text", "clip_id", "image_base64") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of text, clip_id, image_base64 (got {given or 'none'})")
        if self.clip_id:
            _safe(self.clip_id)
        return self


class SearchHit(BaseModel):
    clip_id: str
    score: float
    caption: str
    tags: list[str]
    video_id: str
    source: str
    start_s: float
    end_s: float
    duration_s: float
    thumbnail_url: str
    preview_url: str
    video_url: str


class SearchResponse(BaseModel):
    query_kind: Literal["text", "clip", "image", "video"]
    collection: str
    took_ms: float
    hits: list[SearchHit]


class DatasetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="lowercase, digits, . _ -")
    description: str = Field("", max_length=2000)
    clip_ids: list[str] | None = Field(None, max_length=100_000)
    query: SearchRequest | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetRequest":
        if (self.clip_ids is None) == (self.query is None):
            raise ValueError("give exactly one of clip_ids or query")
        if self.clip_ids is not None:
            if not self.clip_ids:
                raise ValueError("clip_ids is empty")
            for c in self.clip_ids:
                _safe(c)
        return self



class SearchError(Refusal):
    """A refused search or dataset request."""


HIT_FIELDS = tuple(f for f in SearchHit.model_fields if f in CLIP_SCALARS)  # what a hit shows of the stored row


class ClipSearch:
    """Queries over the clip index and dataset versions in the store.

    ``embed_text(str)`` and ``embed_image(bytes)`` return the query vector (``embed_image`` raises
    ``ValueError`` for bytes that are no image); ``source`` names the service in ``datasets.created``."""

    def __init__(self, index: VectorIndex, store: ObjectStore, bus: Bus, *, embed_text: Callable[[str], np.ndarray],
                 embed_image: Callable[[bytes], np.ndarray], max_dataset_clips: int = 100_000, max_top_k: int = 100,
                 source: str = "search") -> None:
        self.index, self.store, self.bus = index, store, bus
        self.embed_text, self.embed_image = embed_text, embed_image
        self.max_dataset_clips, self.max_top_k, self.source = max_dataset_clips, max_top_k, source

    # queries -----------------------------------------------------------------------------------
    def check_top_k(self, top_k: int) -> int:
        """The one bound on top_k, for JSON queries, media queries and dataset queries alike."""
        if not 1 <= top_k <= self.max_top_k:
            raise SearchError(422, "invalid_request", f"top_k must be between 1 and {self.max_top_k}, not {top_k}")
        return top_k

    def search(self, req: SearchRequest) -> SearchResponse:
        self.check_top_k(req.top_k)
        return self._search(req)

    def _search(self, req: SearchRequest) -> SearchResponse:
        exclude, rows = None, "clip"
        if req.text:
            kind, collection, rows = "text", TEXT_COLLECTION, "caption"
            vector = self.embed_text(req.text)
        elif req.clip_id:
            kind, collection, exclude = "clip", VISUAL_COLLECTION, req.clip_id
            found = self.index.get(VISUAL_COLLECTION, [req.clip_id], ["vector"])
            if not found:
                raise SearchError(404, "not_found", f"no curated clip {req.clip_id!r} in the index")
            vector = np.asarray(found[0]["vector"], dtype=np.float32)
        else:
            kind, collection, rows = "image", VISUAL_COLLECTION, "frame"
            try:
                data = base64.b64decode(req.image_base64 or "", validate=True)
            except (binascii.Error, ValueError):
                raise SearchError(422, "invalid_image", "image_base64 is not valid base64") from None
            if not data:
                raise SearchError(422, "invalid_image", "the image is empty")
            try:
                vector = self.embed_image(data)
            except ValueError as exc:
                raise SearchError(422, "invalid_image", f"cannot decode the image: {exc}") from None
        return self.query(kind, collection, rows, vector, req.top_k, req.filters, exclude)

    def query(self, kind: str, collection: str, rows: str, vector: np.ndarray, top_k: int,
              filters: SearchFilters, exclude: str | None) -> SearchResponse:
        """The ``top_k`` best clips for ``vector`` among ``rows`` of ``collection`` (one hit per clip)."""
        start = time.perf_counter()
        parts = [f'kind == "{rows}"'] + ([f"({e})"] if (e := filters.expression()) else [])
        if exclude:
            parts.append(f'clip_id != "{exclude}"')
        limit = top_k * KEYFRAMES_PER_CLIP if rows == "frame" else top_k
        raw = self.index.search(collection, [vector.tolist()], limit=min(limit, 16384), filter=" and ".join(parts),
                                output_fields=HIT_FIELDS)[0]
        best: dict[str, Hit] = {}
        for h in raw:  # keyframe rows: keep each clip's best-matching frame
            cid = h.fields.get("clip_id") or h.id
            if cid not in best or h.score > best[cid].score:
                best[cid] = h
        hits = sorted(best.values(), key=lambda h: -h.score)[:top_k]
        took = time.perf_counter() - start
        QUERIES.labels(kind).inc()
        QUERY_SECONDS.labels(kind).observe(took)
        return SearchResponse(query_kind=kind, collection=collection, took_ms=round(took * 1000, 2),
                              hits=[_hit(h) for h in hits])

    # datasets ----------------------------------------------------------------------------------
    def create_dataset(self, req: DatasetRequest) -> DatasetManifest:
        """Save the query's hits (or the given clip ids) as the next version of ``req.name``."""
        if req.query is not None:
            self.check_top_k(req.query.top_k)
            query = req.query.model_copy(update={"top_k": min(req.query.top_k, self.max_dataset_clips)})
            clip_ids = [h.clip_id for h in self._search(query).hits]
        else:
            clip_ids = list(dict.fromkeys(req.clip_ids or []))
        return self.save_dataset(req.name, clip_ids, description=req.description, query=req.query)

    def save_dataset(self, name: str, clip_ids: list[str], *, description: str = "",
                     query: SearchRequest | None = None) -> DatasetManifest:
        """Save ``clip_ids`` (accepted curated clips) as the next version of ``name``, recording the query
        that found them (the lineage of whatever trains on the dataset), and announce it."""
        req = DatasetRequest.model_construct(name=name, description=description, clip_ids=clip_ids, query=query)
        if not clip_ids:
            raise SearchError(422, "empty_dataset", "the query found no clips; nothing to save")
        if len(clip_ids) > self.max_dataset_clips:
            raise SearchError(413, "too_many_clips", f"a dataset holds at most {self.max_dataset_clips} clips")
        clips, missing = [], []
        for cid in clip_ids:
            try:
                rec = read_clip(self.store, cid)
            except (ObjectNotFound, ValueError):
                missing.append(cid)
                continue
            if rec.status != "accepted":
                missing.append(cid)
                continue
            clips.append({
                "clip_id": rec.clip_id, "video_id": rec.video_id, "start_s": rec.start_s, "end_s": rec.end_s,
                "caption": rec.caption, "tags": rec.tags, "shard": rec.shard and self.store.uri(rec.shard),
                "renditions": {k: self.store.uri(v) for k, v in rec.renditions.items()},
            })
        if missing:
            raise SearchError(422, "unknown_clips", f"not accepted curated clips: {missing[:10]}")
        manifest = self._save_next_version(req, clips)
        try:
            self._announce(manifest)
        except Exception as exc:
            log.error("could not emit datasets.created", extra={"dataset": req.name, "error": str(exc)})
            raise SearchError(503, "bus_unavailable", f"dataset {req.name!r} is saved as version {manifest.version}, "
                              "but the event bus did not acknowledge datasets.created; the service announces it when "
                              "it starts again (do not save it again: that would be a new version)") from None
        return manifest

    def _announce(self, manifest: DatasetManifest) -> None:
        """datasets.created for a saved version (its id derived from name + version), then the marker that
        says so: the manifest, then the event, then the record of having sent it."""
        key = dataset_key(manifest.name, manifest.version)
        payload = events.DatasetCreated(name=manifest.name, version=manifest.version, manifest_uri=self.store.uri(key),
                                        clip_count=len(manifest.clip_ids))
        event_id = events.effect_id(events.TOPIC_DATASETS_CREATED, manifest.name, str(manifest.version))
        self.bus.publish(events.TOPIC_DATASETS_CREATED,
                         events.new_event(self.source, payload, lineage=manifest.clip_ids, event_id=event_id),
                         key=manifest.name)
        self.store.put_bytes(dataset_announced_key(manifest.name, manifest.version),
                             json.dumps({"event_id": event_id}).encode(), "application/json")

    def resume(self) -> int:
        """Announces every saved dataset version whose datasets.created was not acknowledged; at start-up."""
        announced = 0
        for name, version in dataset_versions(self.store):
            if self.store.exists(dataset_announced_key(name, version)):
                continue
            try:
                self._announce(read_dataset(self.store, name, version))
                announced += 1
            except Exception as exc:  # the bus is still down: the next start tries again
                log.warning("could not announce dataset %s v%d: %s", name, version, exc)
                break
        return announced

    def _save_next_version(self, req: DatasetRequest, clips: list[dict[str, Any]]) -> DatasetManifest:
        """Writes the manifest as the next free version: created only if that version does not exist (S3
        If-None-Match), so replicas saving one name at once each get their own version, never overwrite."""
        version = latest_dataset_versions(self.store, req.name).get(req.name, 0) + 1
        for _ in range(_VERSION_ATTEMPTS):
            manifest = DatasetManifest(
                name=req.name, version=version, description=req.description, created_at=datetime.now(timezone.utc),
                query=req.query.model_dump(mode="json") if req.query else None,
                clip_ids=[c["clip_id"] for c in clips], clips=clips,
            )
            if self.store.create_record(dataset_key(req.name, version), manifest):
                return manifest
            version = max(version + 1, latest_dataset_versions(self.store, req.name).get(req.name, 0) + 1)
        raise SearchError(503, "dataset_busy", f"dataset {req.name!r}: {_VERSION_ATTEMPTS} versions were taken "
                          "while saving this one; retry")

    def dataset(self, name: str, version: int | None = None) -> DatasetManifest:
        try:
            return read_dataset(self.store, name, version)
        except (ObjectNotFound, ValueError):  # ValueError: a name that is no key, or a damaged manifest
            raise SearchError(404, "not_found", f"no dataset {name!r}" + (f" version {version}" if version else "")) from None


def _hit(h: Hit) -> SearchHit:
    f = h.fields
    cid = f.get("clip_id") or h.id
    base = f"/v1/clips/{cid}/media"
    return SearchHit(
        clip_id=cid, score=round(h.score, 5), caption=f.get("caption", ""), tags=list(f.get("tags") or []),
        video_id=f.get("video_id", ""), source=f.get("source", ""), start_s=f.get("start_s", 0.0),
        end_s=f.get("end_s", 0.0), duration_s=f.get("duration_s", 0.0),
        thumbnail_url=f"{base}/thumb.jpg", preview_url=f"{base}/preview.gif", video_url=f"{base}/preview.mp4",
    )
