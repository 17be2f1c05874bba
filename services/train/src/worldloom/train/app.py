"""Train HTTP API: world-model jobs and the model registry. Run with `python -m worldloom.train`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import APIRouter, FastAPI, Query

from worldloom.core.bus import Bus, make_bus
from worldloom.core.service import create_app
from worldloom.core.settings import load_settings
from worldloom.core.store import ObjectStore, make_store
from worldloom.models.world.registry import WorldModelRecord
from worldloom.train.schemas import WorldModelJobRequest
from worldloom.train.service import TrainService
from worldloom.train.settings import TrainSettings

DESCRIPTION = """Pretrains world models on tokenized clips with Ray Train: an autoregressive transformer over
discrete tokens (`family: ar`) or a flow-matching diffusion transformer over continuous latents
(`family: diffusion`), optionally action-conditioned. Jobs report percent done, loss and throughput
curves; checkpoints (safetensors) go to the object store and a killed job resumes from its last one.
Finished models are evaluated against a copy-last-frame baseline on held-out clips, registered with
their lineage and announced on `models.trained`."""


def build_router(svc: TrainService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/jobs", response_model=WorldModelRecord, status_code=202, tags=["jobs"],
                 summary="Start a pretraining job (family, size, tokenizer, dataset, steps, batch, workers, GPUs)")
    def create(req: WorldModelJobRequest) -> WorldModelRecord:
        return svc.jobs.create(req)

    @router.get("/jobs", response_model=list[WorldModelRecord], tags=["jobs"], summary="All jobs, newest first")
    def list_jobs(state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = Query(None)
                  ) -> list[WorldModelRecord]:
        return [r for r in svc.registry.list() if state is None or r.state == state]

    @router.get("/jobs/{model_id}", response_model=WorldModelRecord, tags=["jobs"],
                summary="State, percent done, loss curve, throughput, final metrics")
    def get_job(model_id: str) -> WorldModelRecord:
        return svc.registry.get(model_id)

    @router.delete("/jobs/{model_id}", response_model=WorldModelRecord, tags=["jobs"], summary="Cancel a job")
    def cancel(model_id: str) -> WorldModelRecord:
        return svc.jobs.cancel(model_id)

    @router.get("/models", response_model=list[WorldModelRecord], tags=["models"],
                summary="The registry: trained models with lineage and metrics")
    def list_models() -> list[WorldModelRecord]:
        return [r for r in svc.registry.list() if r.state == "succeeded"]

    @router.get("/models/{model_id}", response_model=WorldModelRecord, tags=["models"],
                summary="A model: lineage (datasets, tokenizer, parent), config, metrics")
    def get_model(model_id: str) -> WorldModelRecord:
        return svc.model(model_id)

    return router


def build_app(settings: TrainSettings | None = None, *, store: ObjectStore | None = None,
              bus: Bus | None = None) -> FastAPI:
    settings = settings or load_settings(TrainSettings)
    store = store or make_store(settings.store)
    bus = bus or make_bus(settings.bus)
    svc = TrainService(store, settings.store, bus, settings.training)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc.jobs.resume_unfinished()
        yield
        svc.close()

    app = create_app("train", settings, [build_router(svc)], description=DESCRIPTION,
                     readiness={"store": store.healthy, "bus": bus.healthy}, lifespan=lifespan)
    app.state.train = svc
    return app
