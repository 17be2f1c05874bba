"""Hand a recorded episode to IngestService, with its actions stored next to the video.

The episode's arrays go through the same path as an upload's (IngestService.ingest_file with the
recording's checked Episode): checked against the probed frame count, stored under raw/<video_id>/
before the video and its sidecar, then videos.ingested, whose attributes point at them. The video
record's source is "gymnasium" and its attributes name env, seed and policy.
"""

from __future__ import annotations

from worldloom.core.catalog import actions_key
from worldloom.core.ids import sha256_file
from worldloom.sim.gymnasium import EpisodeRecording
from worldloom.video.ingest import IngestResult, IngestService

__all__ = ["INGEST_SOURCE", "actions_key", "ingest_recording"]

INGEST_SOURCE = "gymnasium"


def ingest_recording(service: IngestService, rec: EpisodeRecording,
                     attributes: dict[str, str] | None = None) -> IngestResult:
    """Validates, stores and announces one episode like an upload (idempotent by content); `attributes` are
    added to the recording's own (e.g. the RL experiment that collected it)."""
    with open(rec.video_path, "rb") as f:
        digest = sha256_file(f)
    return service.ingest_file(rec.video_path, rec.video_path.name, INGEST_SOURCE,
                               {**rec.attributes(), **(attributes or {})}, digest, episode=rec.arrays)
