"""Request and response shapes of the search API (the query and dataset shapes are shared with the
post-training service: :mod:`worldloom.core.clipsearch`)."""

from __future__ import annotations

from pydantic import BaseModel

from worldloom.core.clipsearch import DatasetRequest, SearchFilters, SearchHit, SearchRequest, SearchResponse

__all__ = ["DatasetRequest", "DatasetSummary", "SearchFilters", "SearchHit", "SearchRequest", "SearchResponse"]


class DatasetSummary(BaseModel):
    name: str
    latest_version: int
    manifest_uri: str
