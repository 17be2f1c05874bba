"""The ingest API's data shapes (also the JSON sidecar stored next to each raw video)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

VideoStatus = Literal["stored", "ingested"]


class VideoRecord(BaseModel):
    """`stored`: bytes and sidecar are durable; `ingested`: videos.ingested was also emitted."""

    video_id: str = Field(description="SHA-256 of the file content (hex)")
    uri: str
    metadata_uri: str
    filename: str
    source: Literal["upload", "import", "gymnasium"]
    size_bytes: int
    content_type: str
    info: dict[str, Any]
    attributes: dict[str, str] = {}
    status: VideoStatus
    event_id: str | None = None
    created_at: datetime
    ingested_at: datetime | None = None


class IngestResult(BaseModel):
    video: VideoRecord
    duplicate: bool = Field(description="true when this content was already ingested (no new event)")


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="s3://<bucket>/<key> of an object in the configured store")
    filename: str | None = Field(None, max_length=255)
    attributes: dict[str, str] = Field(default_factory=dict, max_length=64)


class VideoPage(BaseModel):
    items: list[VideoRecord]
    next_page_token: str | None = None
