"""Ingest logic: the shared ingest core (worldloom.video.ingest), which rlsim's real episodes go through too.

The write order, dedupe by content id, episode arrays and videos.ingested are implemented once there;
this module is the service's name for them (app.py, the simulator source's jobs, and the tests use it).
"""

from worldloom.video.ingest import (
    BYTES,
    EPISODE_ATTRIBUTES,
    PRODUCER,
    VIDEOS,
    IngestError,
    IngestService,
    check_attributes,
    validate_filename,
)

__all__ = [
    "BYTES",
    "EPISODE_ATTRIBUTES",
    "PRODUCER",
    "VIDEOS",
    "IngestError",
    "IngestService",
    "check_attributes",
    "validate_filename",
]
