"""Search HTTP API and web page. Run with `python -m worldloom.search`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from worldloom.core.bus import Bus, make_bus
from worldloom.core.catalog import DatasetManifest
from worldloom.core.service import ApiError, create_app
from worldloom.core.service.background import in_background
from worldloom.core.service.jsonbody import loads_bounded
from worldloom.core.settings import load_settings
from worldloom.core.store import ObjectStore, make_store
from worldloom.core.vectors import VectorIndex
from worldloom.search.schemas import DatasetRequest, DatasetSummary, SearchFilters, SearchRequest, SearchResponse
from worldloom.search.service import SearchService
from worldloom.search.settings import SearchSettings

DESCRIPTION = """Finds curated clips by text (caption embeddings), by an example image or clip (visual
embeddings) or by a clip id, with scalar filters; saves results as named, versioned datasets that
post-training jobs consume. A small web page is served at `/`."""


def build_router(service: SearchService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/search", response_model=SearchResponse, tags=["search"],
                 summary="Search by text, clip id or a base64 image, with filters")
    def search(req: SearchRequest) -> SearchResponse:
        return service.search(req)

    @router.post("/search:media", response_model=SearchResponse, tags=["search"],
                 summary="Search with an uploaded image or video clip (multipart: file, top_k, filters)")
    async def search_media(request: Request) -> SearchResponse:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data with a 'file' part")
        try:
            form = await request.form(max_files=1, max_fields=4, max_part_size=64 * 1024)
        except MultiPartException as exc:
            raise ApiError(400, "invalid_multipart", str(exc)) from None
        try:
            unknown = set(form.keys()) - {"file", "top_k", "filters"}
            if unknown:
                raise ApiError(400, "unknown_field", f"unknown form field(s): {sorted(unknown)}")
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "missing_file", "the form has no 'file' part")
            try:
                top_k = int(str(form.get("top_k") or 10))
                filters = SearchFilters.model_validate(
                    loads_bounded(str(form.get("filters") or "{}"), code="invalid_request", what="'filters'"))
            except (ValueError, ValidationError) as exc:
                raise ApiError(422, "invalid_request", f"top_k/filters: {exc}") from None
            return await run_in_threadpool(service.search_media, upload.file, top_k, filters)
        finally:
            await form.close()

    @router.get("/clips/{clip_id}/media/{name}", tags=["clips"],
                summary="A clip's thumbnail (thumb.jpg), animated preview (preview.gif) or video")
    def media(clip_id: str, name: str) -> StreamingResponse:
        stream, ctype = service.media(clip_id, name)

        def chunks() -> Iterator[bytes]:
            with stream:
                while chunk := stream.read(1 << 16):
                    yield chunk

        return StreamingResponse(chunks(), media_type=ctype, headers={"cache-control": "private, max-age=3600"})

    @router.post("/datasets", response_model=DatasetManifest, status_code=201, tags=["datasets"],
                 summary="Save a query's results or a list of clip ids as the next version of a dataset")
    def create_dataset(req: DatasetRequest) -> DatasetManifest:
        return service.create_dataset(req)

    @router.get("/datasets", response_model=list[DatasetSummary], tags=["datasets"])
    def list_datasets() -> list[DatasetSummary]:
        return service.datasets()

    @router.get("/datasets/{name}", response_model=DatasetManifest, tags=["datasets"],
                summary="A dataset manifest (latest version unless ?version=N)")
    def get_dataset(name: str, version: Annotated[int | None, Query(ge=1)] = None) -> DatasetManifest:
        return service.dataset(name, version)

    return router


def build_app(
    settings: SearchSettings | None = None,
    *,
    store: ObjectStore | None = None,
    bus: Bus | None = None,
    index: VectorIndex | None = None,
) -> FastAPI:
    settings = settings or load_settings(SearchSettings)
    store = store or make_store(settings.store)
    bus = bus or make_bus(settings.bus)
    index = index or VectorIndex.from_settings(settings.vectors)
    service = SearchService(index, store, bus, settings.max_dataset_clips, settings.max_top_k)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with in_background(service.resume, "search-resume"):  # announce unacknowledged dataset versions
            yield

    app = create_app(
        "search", settings, [build_router(service)], description=DESCRIPTION, lifespan=lifespan,
        readiness={"store": store.healthy, "bus": bus.healthy, "vectors": index.healthy},
        body_limits={("POST", "/v1/search:media"): settings.max_upload_bytes + 64 * 1024,
                     ("POST", "/v1/search"): 24 * 1024 * 1024},
        public_paths=("/",),  # the page itself; it asks its user for a token for the API calls
    )
    page = resources.files("worldloom.search").joinpath("static/index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    app.state.search = service
    return app
