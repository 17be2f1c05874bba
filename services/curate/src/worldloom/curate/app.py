"""Curate HTTP API + the videos.ingested consumer. Run with `python -m worldloom.curate`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from worldloom.core import events
from worldloom.core.bus import Bus, make_bus
from worldloom.core.catalog import ClipRecord
from worldloom.core.service import create_app
from worldloom.core.service.background import consuming
from worldloom.core.settings import load_settings
from worldloom.core.store import ObjectStore, make_store
from worldloom.core.vectors import VectorIndex
from worldloom.curate.schemas import CurationRun, PipelineInfo, RecaptionRequest, RunRequest
from worldloom.curate.service import CurateService
from worldloom.curate.settings import CurateSettings

DESCRIPTION = """Turns ingested videos into training clips: split (shot detection or fixed stride),
transcode (preview + square training rendition), quality filters with recorded scores, annotation
(metadata, optional VLM, visual descriptors), visual + caption embeddings, deduplication, then clips,
webdataset shards, a Parquet summary and Milvus vectors. Every `videos.ingested` event is curated
with the default config; `POST /v1/curation-runs` (re)curates chosen videos with any config."""


def build_router(service: CurateService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/curation-runs", response_model=CurationRun, status_code=202, tags=["runs"],
                 summary="Start a curation run over ingested videos (runs in the background)")
    def start_run(req: RunRequest) -> CurationRun:
        run = service.new_run(req.video_ids, req.config)
        service.submit(run, req.config)
        return run

    @router.post("/curation-runs:recaption", response_model=CurationRun, status_code=202, tags=["runs"],
                 summary="Re-curate the videos whose captions fell back while the VLM failed",
                 responses={404: {"description": "no video has fallback captions with this config"},
                            409: {"description": "no VLM is configured"}})
    def recaption(req: RecaptionRequest) -> CurationRun:
        run = service.recaption_run(req.config)
        service.submit(run, req.config)
        return run

    @router.get("/curation-runs/{run_id}", response_model=CurationRun, tags=["runs"],
                summary="Run status: state, percent done, per-stage counts, rejections per filter")
    def get_run(run_id: str) -> CurationRun:
        return service.get_run(run_id)

    @router.get("/clips/{clip_id}", response_model=ClipRecord, tags=["clips"],
                summary="A clip's record: span, caption, tags, scores, rejection reasons, renditions")
    def get_clip(clip_id: str) -> ClipRecord:
        return service.get_clip(clip_id)

    @router.get("/pipeline", response_model=PipelineInfo, tags=["runs"],
                summary="The default pipeline: stages, their fields and resources")
    def pipeline() -> PipelineInfo:
        return service.describe_pipeline()

    return router


def build_app(
    settings: CurateSettings | None = None,
    *,
    store: ObjectStore | None = None,
    bus: Bus | None = None,
    index: VectorIndex | None = None,
) -> FastAPI:
    settings = settings or load_settings(CurateSettings)
    store = store or make_store(settings.store)
    bus = bus or make_bus(settings.bus)
    index = index or VectorIndex.from_settings(settings.vectors)
    service = CurateService(store, bus, index, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with consuming(bus, [events.TOPIC_VIDEOS_INGESTED], settings.consumer_group, service.handle_event,
                       "curate-consumer", enabled=settings.consume):
            yield
        service.close()

    app = create_app("curate", settings, [build_router(service)], description=DESCRIPTION,
                     readiness={"store": store.healthy, "bus": bus.healthy, "vectors": index.healthy},
                     lifespan=lifespan)
    app.state.curate = service
    return app
