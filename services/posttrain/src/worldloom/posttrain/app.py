"""Posttrain HTTP API: post-training jobs on registered world models. Run with `python -m worldloom.posttrain`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import APIRouter, FastAPI, Query

from worldloom.core.bus import Bus, make_bus
from worldloom.core.service import create_app
from worldloom.core.settings import load_settings
from worldloom.core.store import ObjectStore, make_store
from worldloom.core.vectors import VectorIndex
from worldloom.models.world.registry import WorldModelRecord
from worldloom.posttrain.schemas import PosttrainRequest
from worldloom.posttrain.service import PosttrainService
from worldloom.posttrain.settings import PosttrainSettings

DESCRIPTION = """Post-trains a registered world model on new data: a saved dataset, a clip filter or a search
(saved as a dataset version, the query in the lineage). Modes: `unsupervised` (a new domain's video),
`supervised` (captions / instructions as text conditioning), `action` (a new embodiment's actions: the
action encoder is added or resized, the rest kept), `reward` (reward and termination heads). Methods:
`full`, `lora` (peft adapters, kept as a separate file served on top of the base, or merged), `heads`.
Every job is evaluated on held-out episodes before (the base) and after, optionally against a same-size
model trained from scratch with the same budget (`baselines: ["scratch"]`); the validation-loss curves
of both give the steps-to-loss ratio. Results go to the shared model registry and `models.trained`
(with `parent_model`)."""


def build_router(svc: PosttrainService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/jobs", response_model=WorldModelRecord, status_code=202, tags=["jobs"],
                 summary="Start a post-training job (base model, data, mode, method, budget, baselines)")
    def create(req: PosttrainRequest) -> WorldModelRecord:
        return svc.jobs.create(req)

    @router.get("/jobs", response_model=list[WorldModelRecord], tags=["jobs"],
                summary="Post-training jobs, newest first")
    def list_jobs(state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = Query(None)
                  ) -> list[WorldModelRecord]:
        return [r for r in svc.registry.list() if r.lineage.posttrain and (state is None or r.state == state)]

    @router.get("/jobs/{model_id}", response_model=WorldModelRecord, tags=["jobs"],
                summary="State, percent done, loss and validation-loss curves, before / after / scratch metrics")
    def get_job(model_id: str) -> WorldModelRecord:
        return svc.registry.get(model_id)

    @router.delete("/jobs/{model_id}", response_model=WorldModelRecord, tags=["jobs"], summary="Cancel a job")
    def cancel(model_id: str) -> WorldModelRecord:
        return svc.jobs.cancel(model_id)

    @router.get("/models/{model_id}", response_model=WorldModelRecord, tags=["models"],
                summary="A post-trained model: lineage (base, dataset, query), config, metrics")
    def get_model(model_id: str) -> WorldModelRecord:
        return svc.model(model_id)

    return router


def build_app(settings: PosttrainSettings | None = None, *, store: ObjectStore | None = None,
              bus: Bus | None = None, index: VectorIndex | None = None) -> FastAPI:
    settings = settings or load_settings(PosttrainSettings)
    store = store or make_store(settings.store)
    bus = bus or make_bus(settings.bus)
    svc = PosttrainService(store, settings.store, bus, settings, index)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc.jobs.resume_unfinished()
        yield
        svc.close()

    app = create_app("posttrain", settings, [build_router(svc)], description=DESCRIPTION,
                     readiness={"store": store.healthy, "bus": bus.healthy}, lifespan=lifespan)
    app.state.posttrain = svc
    return app
