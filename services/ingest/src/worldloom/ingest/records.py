"""The ingest API's data shapes; the sidecar stored next to each raw video (VideoRecord) is in the
core catalog, because curate reads it too."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from worldloom.core.catalog import VideoRecord


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
