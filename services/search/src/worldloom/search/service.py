"""Search over curated clips: text -> caption vectors, image/clip -> visual vectors, plus datasets.

Queries and dataset versions are :class:`worldloom.core.clipsearch.ClipSearch` (the post-training service
saves its searches the same way); this adds the embedders, uploaded media, clips and their media files.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from worldloom.core.bus import Bus
from worldloom.core.catalog import (
    VISUAL_COLLECTION,
    ClipRecord,
    clip_collections,
    dataset_key,
    latest_dataset_versions,
    read_clip,
)
from worldloom.core.clipsearch import ClipSearch, SearchError
from worldloom.core.scratch import scratch_prefix
from worldloom.core.store import ObjectNotFound, ObjectStore
from worldloom.core.vectors import VectorIndex
from worldloom.search.schemas import DatasetSummary, SearchFilters, SearchResponse
from worldloom.video import analysis, visual_embed
from worldloom.video.errors import VideoRejected

if TYPE_CHECKING:  # the embedder pulls in torch: imported when a text query needs it
    from worldloom.models.text_embedder import TextEmbedder

__all__ = ["MEDIA_NAMES", "SearchError", "SearchService"]

MEDIA_NAMES = {"thumb.jpg": "image/jpeg", "preview.gif": "image/gif", "preview.mp4": "video/mp4", "train.mp4": "video/mp4"}


class SearchService(ClipSearch):
    def __init__(self, index: VectorIndex, store: ObjectStore, bus: Bus, max_dataset_clips: int = 100_000,
                 max_top_k: int = 100) -> None:
        super().__init__(index, store, bus, embed_text=lambda text: self.text_embedder.encode_one(text),
                         embed_image=visual_embed.embed_image_bytes, max_dataset_clips=max_dataset_clips,
                         max_top_k=max_top_k, source="search")
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
            return self.query("image", VISUAL_COLLECTION, "frame", visual_embed.embed_clip(frames), top_k, filters, None)
        return self.query("video", VISUAL_COLLECTION, "clip", visual_embed.embed_clip(frames), top_k, filters, None)

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

    def datasets(self) -> list[DatasetSummary]:
        return [DatasetSummary(name=n, latest_version=v, manifest_uri=self.store.uri(dataset_key(n, v)))
                for n, v in sorted(latest_dataset_versions(self.store).items())]


