"""HTTP for simulator sources: start a recording job, follow it, list what can be recorded.

Mounted by ingest's create_app call, so it sits behind the same bearer auth as /v1/videos.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from worldloom.ingest.sources.envs import allowed_envs, available
from worldloom.ingest.sources.jobs import GymnasiumRequest, JobRunner, SourceJob
from worldloom.ingest.sources.policies import policy_names


def build_sources_router(runner: JobRunner) -> APIRouter:
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
        envs = [{"id": env_id, "family": fam.name, "available": available(fam),
                 "extra": fam.extra or None} for env_id, fam in sorted(allowed_envs().items())]
        return {"envs": envs, "policies": policy_names(), "limits": runner.limits.model_dump()}

    return router
