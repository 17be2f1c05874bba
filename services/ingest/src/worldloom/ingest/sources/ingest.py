"""Hand a recorded episode to IngestService, with its actions stored next to the video.

Order: the arrays and their description go to raw/<video_id>/ first (the id is the MP4's SHA-256,
known before ingest), then ingest_file stores the video and announces videos.ingested whose
attributes point at them — so a consumer of the event always finds the actions. The files are
written only when absent: the content is deterministic, and a stored record's URIs never change
under it. The video record's source is "gymnasium" and its attributes name env, seed and policy.
"""

from __future__ import annotations

from worldloom.core.catalog import actions_key, actions_meta_key, raw_meta_key
from worldloom.core.ids import sha256_file
from worldloom.ingest.schemas import IngestResult
from worldloom.ingest.service import IngestError, IngestService
from worldloom.ingest.sources.gymnasium import EpisodeRecording

INGEST_SOURCE = "gymnasium"


def ingest_recording(service: IngestService, rec: EpisodeRecording) -> IngestResult:
    """Validates, stores and announces one episode like an upload (idempotent by content)."""
    with open(rec.video_path, "rb") as f:
        digest = sha256_file(f)
    video_id = digest[0]
    store = service.store
    written = []
    for key, path, content_type in ((actions_key(video_id), rec.arrays_path, "application/octet-stream"),
                                    (actions_meta_key(video_id), rec.description_path, "application/json")):
        if not store.exists(key):
            store.put_bytes(key, path.read_bytes(), content_type)
            written.append(key)
    attributes = rec.attributes(store.uri(actions_key(video_id)), store.uri(actions_meta_key(video_id)))
    try:
        return service.ingest_file(rec.video_path, rec.video_path.name, INGEST_SOURCE, attributes, digest)
    except IngestError as exc:
        if exc.status < 500 and not store.exists(raw_meta_key(video_id)):
            for key in written:  # rejected video: leave nothing behind under its id
                store.delete(key)
        raise
