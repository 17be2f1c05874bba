"""Search over curated clips: text -> caption vectors, image/clip -> visual vectors, plus datasets."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from prometheus_client import Counter, Histogram

from worldloom.core import events
from worldloom.core.bus import Bus
from worldloom.core.catalog import (
    CLIP_SCALARS,
    TEXT_COLLECTION,
    VISUAL_COLLECTION,
    ClipRecord,
    DatasetManifest,
    clip_collections,
    dataset_announced_key,
    dataset_key,
    dataset_versions,
    latest_dataset_versions,
    read_clip,
    read_dataset,
)
from worldloom.core.errors import Refusal
from worldloom.core.scratch import scratch_prefix
from worldloom.core.store import ObjectNotFound, ObjectStore
from worldloom.core.vectors import Hit, VectorIndex
from worldloom.search.schemas import (
    DatasetRequest,
    DatasetSummary,
    SearchFilters,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from worldloom.video import analysis, visual_embed
from worldloom.video.errors import VideoRejected

if TYPE_CHECKING:  # the embedder pulls in torch: imported when a text query needs it
    from worldloom.models.text_embedder import TextEmbedder

log = logging.getLogger("worldloom.search")
QUERIES = Counter("worldloom_search_queries_total", "Search queries", ["kind"])
QUERY_SECONDS = Histogram("worldloom_search_query_seconds", "Search latency without HTTP", ["kind"])
HIT_FIELDS = tuple(f for f in SearchHit.model_fields if f in CLIP_SCALARS)  # what a hit shows of the stored row
_VERSION_ATTEMPTS = 50  # racing savers of one name each take the next free version
KEYFRAMES_PER_CLIP = 16  # upper bound of "frame" rows per clip, to over-fetch before grouping
MEDIA_NAMES = {"thumb.jpg": "image/jpeg", "preview.gif": "image/gif", "preview.mp4": "video/mp4", "train.mp4": "video/mp4"}


class SearchError(Refusal):
    """A refused search request."""


class SearchService:
    def __init__(self, index: VectorIndex, store: ObjectStore, bus: Bus, max_dataset_clips: int = 100_000,
                 max_top_k: int = 100) -> None:
        self.index = index
        self.store = store
        self.bus = bus
        self.max_dataset_clips = max_dataset_clips
        self.max_top_k = max_top_k
        self._text: TextEmbedder | None = None
        self._text_lock = threading.Lock()
        from worldloom.models.text_embedder import DIM as TEXT_DIM

        for spec in clip_collections(visual_embed.DIM, TEXT_DIM):
            index.ensure_collection(spec)

    @property
    def text_embedder(self) -> TextEmbedder:  # loaded on the first text query: ~1 s, 90 MB
        with self._text_lock:
            if self._text is None:
                from worldloom.models.text_embedder import shared_text_embedder

                self._text = shared_text_embedder()
            return self._text

    # queries -----------------------------------------------------------------------------------
    def check_top_k(self, top_k: int) -> int:
        """The one bound on top_k, for JSON queries, media queries and dataset queries alike."""
        if not 1 <= top_k <= self.max_top_k:
            raise SearchError(422, "invalid_request", f"top_k must be between 1 and {self.max_top_k}, not {top_k}")
        return top_k

    def search(self, req: SearchRequest) -> SearchResponse:
        self.check_top_k(req.top_k)
        exclude, rows = None, "clip"
        if req.text:
            kind, collection, rows = "text", TEXT_COLLECTION, "caption"
            vector = self.text_embedder.encode_one(req.text)
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
            vector = self._embed_image_bytes(data)
        return self._query(kind, collection, rows, vector, req.top_k, req.filters, exclude)

    def search_media(self, fileobj: BinaryIO, top_k: int, filters: SearchFilters) -> SearchResponse:
        """An uploaded image or video clip: frames are embedded exactly as curation embeds clips."""
        self.check_top_k(top_k)
        with tempfile.NamedTemporaryFile(prefix=scratch_prefix("query")) as tmp:
            while chunk := fileobj.read(1 << 20):
                tmp.write(chunk)
            tmp.flush()
            try:
                frames = analysis.analysis_frames(Path(tmp.name)).frames
            except VideoRejected as exc:
                raise SearchError(422, exc.code, f"cannot read the uploaded media: {exc.reason}") from None
        if len(frames) == 0:
            raise SearchError(422, "no_frames", "the uploaded media has no decodable frames")
        if len(frames) == 1:
            return self._query("image", VISUAL_COLLECTION, "frame", visual_embed.embed_clip(frames), top_k, filters, None)
        return self._query("video", VISUAL_COLLECTION, "clip", visual_embed.embed_clip(frames), top_k, filters, None)

    def _embed_image_bytes(self, data: bytes) -> np.ndarray:
        if not data:
            raise SearchError(422, "invalid_image", "the image is empty")
        with tempfile.NamedTemporaryFile(prefix=scratch_prefix("image")) as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                frames = analysis.analysis_frames(Path(tmp.name), max_frames=1).frames
            except VideoRejected as exc:
                raise SearchError(422, "invalid_image", f"cannot decode the image: {exc.reason}") from None
        if len(frames) == 0:
            raise SearchError(422, "invalid_image", "the image has no decodable frame")
        return visual_embed.embed_clip(frames[:1])

    def _query(self, kind: str, collection: str, rows: str, vector: np.ndarray, top_k: int,
               filters: SearchFilters, exclude: str | None) -> SearchResponse:
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

    # clips and media ---------------------------------------------------------------------------
    def clip(self, clip_id: str) -> ClipRecord:
        try:
            return read_clip(self.store, clip_id)
        except ObjectNotFound:
            raise SearchError(404, "not_found", f"no clip {clip_id!r}") from None

    def media(self, clip_id: str, name: str) -> tuple[BinaryIO, str]:
        if name not in MEDIA_NAMES:
            raise SearchError(404, "not_found", f"unknown media {name!r}; one of {sorted(MEDIA_NAMES)}")
        record = self.clip(clip_id)
        key = record.renditions.get(name)
        if key is None:
            raise SearchError(404, "not_found", f"clip {clip_id} has no {name} (rejected clips keep no media)")
        try:
            return self.store.open(key), MEDIA_NAMES[name]
        except ObjectNotFound:
            raise SearchError(404, "not_found", f"{name} of clip {clip_id} is missing from the store") from None

    # datasets ----------------------------------------------------------------------------------
    def create_dataset(self, req: DatasetRequest) -> DatasetManifest:
        if req.query is not None:
            self.check_top_k(req.query.top_k)
            query = req.query.model_copy(update={"top_k": min(req.query.top_k, self.max_dataset_clips)})
            clip_ids = [h.clip_id for h in self.search(query).hits]
        else:
            clip_ids = list(dict.fromkeys(req.clip_ids or []))
        if not clip_ids:
            raise SearchError(422, "empty_dataset", "the query found no clips; nothing to save")
        if len(clip_ids) > self.max_dataset_clips:
            raise SearchError(413, "too_many_clips", f"a dataset holds at most {self.max_dataset_clips} clips")
        clips, missing = [], []
        for cid in clip_ids:
            try:
                rec = self.clip(cid)
            except SearchError:
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
        manifest, _ = self._save_next_version(req, clips)
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
                         events.new_event("search", payload, lineage=manifest.clip_ids, event_id=event_id),
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

    def _save_next_version(self, req: DatasetRequest, clips: list[dict[str, Any]]) -> tuple[DatasetManifest, str]:
        """Writes the manifest as the next free version: created only if that version does not exist (S3
        If-None-Match), so replicas saving one name at once each get their own version, never overwrite."""
        version = latest_dataset_versions(self.store, req.name).get(req.name, 0) + 1
        for _ in range(_VERSION_ATTEMPTS):
            manifest = DatasetManifest(
                name=req.name, version=version, description=req.description, created_at=datetime.now(timezone.utc),
                query=req.query.model_dump(mode="json") if req.query else None,
                clip_ids=[c["clip_id"] for c in clips], clips=clips,
            )
            key = dataset_key(req.name, version)
            if self.store.create_record(key, manifest):
                return manifest, key
            version = max(version + 1, latest_dataset_versions(self.store, req.name).get(req.name, 0) + 1)
        raise SearchError(503, "dataset_busy", f"dataset {req.name!r}: {_VERSION_ATTEMPTS} versions were taken "
                          "while saving this one; retry")

    def dataset(self, name: str, version: int | None = None) -> DatasetManifest:
        try:
            return read_dataset(self.store, name, version)
        except (ObjectNotFound, ValueError):  # ValueError: a name that is no key, or a damaged manifest
            raise SearchError(404, "not_found", f"no dataset {name!r}" + (f" version {version}" if version else "")) from None

    def datasets(self) -> list[DatasetSummary]:
        return [DatasetSummary(name=n, latest_version=v, manifest_uri=self.store.uri(dataset_key(n, v)))
                for n, v in sorted(latest_dataset_versions(self.store).items())]


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
