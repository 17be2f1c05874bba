"""Request and response shapes of the search API."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class DatasetSummary(BaseModel):
    name: str
    latest_version: int
    manifest_uri: str
