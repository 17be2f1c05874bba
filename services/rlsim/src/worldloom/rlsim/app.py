"""RL-sim HTTP API: experiments, the policy registry and real-env evaluations. Run with `python -m worldloom.rlsim`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import APIRouter, FastAPI, Query, Response

from worldloom.core.bus import Bus, make_bus
from worldloom.core.service import create_app
from worldloom.core.settings import load_settings
from worldloom.core.store import ObjectStore, make_store
from worldloom.rlsim.loop import make_ingest
from worldloom.rlsim.schemas import EvaluateRequest, EvaluationResult, ExperimentRecord, ExperimentRequest, PolicyRecord
from worldloom.rlsim.service import RlsimService
from worldloom.rlsim.settings import RlsimSettings

DESCRIPTION = """Agents that learn inside a world model on a budget of real steps. An experiment acts in a real
Gymnasium environment (allow-listed, observed only through its `rgb_array` pixels at a chosen resolution),
ingests every episode as a video with its actions and rewards (`videos.ingested`, searchable and reusable),
updates the world model on them, trains an actor-critic in imagination, evaluates it in the real env and repeats.
Experiments report state, percent, real steps and learning curves, resume after a kill from their last
iteration and can be cancelled. Their policies are registered with lineage (world model, episodes, experiment)
and announced on `policies.trained`; `POST /v1/policies/{id}/evaluate` runs real episodes on unseen seeds."""


def build_router(svc: RlsimService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post(
        "/experiments",
        response_model=ExperimentRecord,
        status_code=202,
        tags=["experiments"],
        summary="Start an experiment (env, resolution, real-step budget, world model, agent, seed)",
    )
    def create(req: ExperimentRequest) -> ExperimentRecord:
        return svc.jobs.create(req)

    @router.get(
        "/experiments",
        response_model=list[ExperimentRecord],
        tags=["experiments"],
        summary="All experiments, newest first",
    )
    def list_experiments(
        state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = Query(None),
    ) -> list[ExperimentRecord]:
        return [r for r in svc.registry.list() if state is None or r.state == state]

    @router.get(
        "/experiments/{experiment_id}",
        response_model=ExperimentRecord,
        tags=["experiments"],
        summary="State, percent, real steps used (step), learning curves, final metrics",
    )
    def get_experiment(experiment_id: str) -> ExperimentRecord:
        return svc.registry.get(experiment_id)

    @router.delete(
        "/experiments/{experiment_id}",
        response_model=ExperimentRecord,
        tags=["experiments"],
        summary="Cancel an experiment",
    )
    def cancel(experiment_id: str) -> ExperimentRecord:
        return svc.jobs.cancel(experiment_id)

    @router.get(
        "/policies", response_model=list[PolicyRecord], tags=["policies"], summary="The policy registry, newest first"
    )
    def list_policies() -> list[PolicyRecord]:
        return svc.policies.list()

    @router.get(
        "/policies/{policy_id}",
        response_model=PolicyRecord,
        tags=["policies"],
        summary="A policy: lineage (experiment, world model, tokenizer, episodes, seeds), metrics",
    )
    def get_policy(policy_id: str) -> PolicyRecord:
        return svc.policies.get(policy_id)

    @router.post(
        "/policies/{policy_id}/evaluate",
        response_model=EvaluationResult,
        tags=["policies"],
        summary="Run N real episodes on seeds never used in training: returns and an MP4 of the first",
    )
    def evaluate(policy_id: str, req: EvaluateRequest) -> EvaluationResult:
        return svc.evaluate(policy_id, req)

    @router.get(
        "/policies/{policy_id}/evaluations/{evaluation_id}/video",
        tags=["policies"],
        response_class=Response,
        summary="The MP4 of an evaluation's first episode (what the agent saw)",
    )
    def evaluation_video(policy_id: str, evaluation_id: str) -> Response:
        return Response(svc.evaluation_video(policy_id, evaluation_id), media_type="video/mp4")

    return router


def build_app(
    settings: RlsimSettings | None = None, *, store: ObjectStore | None = None, bus: Bus | None = None
) -> FastAPI:
    settings = settings or load_settings(RlsimSettings)
    store = store or make_store(settings.store)
    bus = bus or make_bus(settings.bus)
    from worldloom.core.episodes import EpisodeLimits
    from worldloom.video.limits import VideoLimits

    ingest = make_ingest(
        store,
        bus,
        VideoLimits(**settings.limits.model_dump()),
        EpisodeLimits(**settings.episodes.model_dump()),
        settings.claim_lease_s,
    )
    svc = RlsimService(store, bus, settings.rl, settings.training, ingest)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc.jobs.resume_unfinished()
        yield
        svc.close()

    app = create_app(
        "rlsim",
        settings,
        [build_router(svc)],
        description=DESCRIPTION,
        readiness={"store": store.healthy, "bus": bus.healthy},
        lifespan=lifespan,
    )
    app.state.rlsim = svc
    return app
