"""Ingest HTTP API: upload or import videos, read their records, record simulator episodes.
Run with `python -m worldloom.ingest`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from worldloom.core.bus import Bus, make_bus
from worldloom.core.catalog import VideoRecord, VideoStatus
from worldloom.core.claims import Claims
from worldloom.core.episodes import UPLOAD_PARTS, Episode, EpisodeLimits, episode_from_parts
from worldloom.core.service import ApiError, create_app
from worldloom.core.service.background import in_background
from worldloom.core.service.jsonbody import loads_bounded
from worldloom.core.service.uploads import ReceivedForm, receive_multipart
from worldloom.core.store import ObjectStore, make_store
from worldloom.ingest.schemas import GymnasiumRequest, ImportRequest, IngestResult, SourceJob, VideoPage
from worldloom.ingest.service import IngestService
from worldloom.ingest.settings import IngestSettings
from worldloom.ingest.sources.jobs import JobRunner
from worldloom.sim.settings import GymnasiumLimits

DESCRIPTION = """Uploads and imports videos. Each video is validated and probed (PyAV), stored under
`raw/<sha256>/` with a JSON sidecar, and announced on the `videos.ingested` topic. The id is the
SHA-256 of the bytes, so uploading the same file again returns the same record and emits nothing.
Still images (PNG, JPEG... whatever the file is named) and single-frame files are refused with
`still_image`: they are not accepted as one-frame videos.

An upload may carry an episode's per-step arrays beside the video: parts `actions` (required with any
array), `states`, `rewards`, `terminated`, each `.npy` (no pickles) or JSON, or all in one `arrays` part
(safetensors, or a JSON object). A video of T frames takes T-1 or T rows per array. They are stored like a
simulator episode's (`raw/<id>/actions.safetensors` + `actions.json`); bad arrays are a 4xx naming the
problem (`array_length`, `array_not_finite`, `array_dtype`, `array_too_wide`, `pickled_array`...) and
nothing is stored.

`/v1/sources/gymnasium` records simulator episodes (MP4 + actions) in the background and ingests
them the same way; `/v1/sources/jobs/{id}` follows such a job."""


def _parse_attributes(raw: str | None) -> dict[str, str]:
    if raw is None:
        return {}
    value = loads_bounded(raw, code="invalid_attributes", what="'attributes'")
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ApiError(400, "invalid_attributes", "'attributes' must be a JSON object mapping strings to strings")
    return value  # IngestService checks the limits (ATTRIBUTE_LIMITS), for every way in


def _episode(form: ReceivedForm, limits: EpisodeLimits) -> Episode | None:
    """The upload's arrays (file parts, or JSON text fields), checked; None without any."""
    parts = {name: f.path.read_bytes() for name, f in form.extras.items()}  # each bounded while received
    parts.update({name: form.fields[name].encode() for name in UPLOAD_PARTS if name in form.fields})
    return episode_from_parts(parts, limits)


def build_router(service: IngestService) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["videos"])

    @router.post(
        "/videos",
        response_model=IngestResult,
        status_code=201,
        summary="Upload a video (multipart: `file`, optional `attributes` JSON, optional episode arrays)",
        responses={200: {"description": "already ingested (duplicate)"},
                   409: {"description": "already ingested with other arrays (episode_conflict)"}, 413: {}, 422: {}},
    )
    async def upload(request: Request, response: Response) -> IngestResult:
        parts = frozenset(UPLOAD_PARTS)
        form = await receive_multipart(
            request, allowed_fields=frozenset({"attributes"}) | parts, max_file_bytes=service.limits.max_bytes,
            extra_files=parts, max_extra_bytes=service.episode_limits.max_array_bytes,
        )
        try:
            attributes = _parse_attributes(form.fields.get("attributes"))
            episode = await run_in_threadpool(_episode, form, service.episode_limits)
            upload = form.file
            result = await run_in_threadpool(
                service.ingest_file, upload.path, upload.filename, "upload", attributes, (upload.sha256, upload.size),
                episode,
            )
        finally:
            form.close()
        if result.duplicate:
            response.status_code = 200
        return result

    @router.post("/videos:import", response_model=IngestResult, status_code=201,
                 summary="Ingest an object already in the configured store")
    def import_video(body: ImportRequest, response: Response) -> IngestResult:
        result = service.import_uri(body.uri, body.filename, body.attributes)
        if result.duplicate:
            response.status_code = 200
        return result

    @router.get("/videos/{video_id}", response_model=VideoRecord, summary="One video's record")
    def get_video(video_id: str) -> VideoRecord:
        return service.get(video_id)

    @router.get("/videos", response_model=VideoPage, summary="List videos, oldest id first, paged")
    def list_videos(
        status: VideoStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        page_token: Annotated[str | None, Query(max_length=64)] = None,
    ) -> VideoPage:
        return service.page(status, limit, page_token)

    return router


def build_sources_router(runner: JobRunner) -> APIRouter:
    """Simulator sources: start a recording job, follow it, list what can be recorded."""
    router = APIRouter(prefix="/v1/sources", tags=["sources"])

    @router.post(
        "/gymnasium", response_model=SourceJob, status_code=202,
        summary="Record Gymnasium episodes (video + actions) in the background and ingest them",
        responses={422: {"description": "unknown env or policy, a limit exceeded, bad env_kwargs"},
                   429: {"description": "too many jobs pending on this replica"},
                   501: {"description": "the env's optional package is not installed here"}},
    )
    def start_gymnasium(body: GymnasiumRequest, response: Response) -> SourceJob:
        job = runner.submit(body)
        response.headers["Location"] = f"/v1/sources/jobs/{job.job_id}"
        return job

    @router.get("/jobs/{job_id}", response_model=SourceJob, summary="A recording job's state, progress, videos, errors")
    def get_job(job_id: str) -> SourceJob:
        return runner.jobs.load(job_id)

    @router.get("/gymnasium/envs", summary="Recordable env ids, whether each runs here, policies and limits")
    def list_envs() -> dict[str, Any]:
        return runner.recordable()

    return router


def build_app(
    settings: IngestSettings | None = None,
    *,
    store: ObjectStore | None = None,
    bus: Bus | None = None,
) -> FastAPI:
    """The ingest app; pass store/bus to share them with other in-process services (embedded mode)."""
    from worldloom.core.settings import load_settings

    settings = settings or load_settings(IngestSettings)
    store = store or make_store(settings.store)
    own_bus = bus is None
    bus = bus or make_bus(settings.bus)
    service = IngestService(store, bus, settings.video_limits(), Claims(store, lease_s=settings.claim_lease_s),
                            episode_limits=settings.episode_limits())
    runner = JobRunner(service, GymnasiumLimits())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with in_background(service.resume, "ingest-resume"):  # announce what a bus outage left "stored"
            yield
        await run_in_threadpool(runner.shutdown)
        if own_bus:
            bus.close()

    app = create_app(
        "ingest", settings, [build_router(service), build_sources_router(runner)], description=DESCRIPTION,
        readiness={"store": store.healthy, "bus": bus.healthy},
        # the upload route may carry a whole video and an episode's arrays; multipart framing adds a little
        body_limits={("POST", "/v1/videos"): settings.max_upload_bytes + settings.episodes.max_array_bytes
                     + 64 * 1024 * (2 + len(UPLOAD_PARTS))},
        lifespan=lifespan,
    )
    app.state.ingest = service
    app.state.sources = runner
    return app
