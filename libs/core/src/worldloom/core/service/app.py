"""The app factory: one call gives a service health/ready/metrics, auth, limits, errors and logs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worldloom.core.service.auth import BearerAuth
from worldloom.core.service.errors import install_error_handlers
from worldloom.core.service.logging import configure_logging
from worldloom.core.service.middleware import ServiceMiddleware
from worldloom.core.settings import ServiceSettings

log = logging.getLogger("worldloom.service")

ReadinessCheck = Callable[[], bool]


def create_app(
    service: str,
    settings: ServiceSettings,
    routers: Sequence[APIRouter],
    *,
    version: str = "0.1.0",
    description: str = "",
    readiness: Mapping[str, ReadinessCheck] | None = None,
    body_limits: Mapping[tuple[str, str], int] | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """Builds a FastAPI app; `routers` are mounted behind bearer auth, health/metrics/docs are public."""
    app = FastAPI(
        title=f"Worldloom {service}",
        version=version,
        description=description,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    auth = BearerAuth(settings.http.tokens(), settings.http.auth_required)
    checks = dict(readiness or {})

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["ops"], summary="Readiness: every dependency answers")
    def readyz() -> JSONResponse:
        results = {}
        for name, check in checks.items():
            try:
                results[name] = bool(check())
            except Exception:
                results[name] = False
        ready = all(results.values())
        return JSONResponse({"ready": ready, "checks": results}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=True)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router, dependencies=[Depends(auth)])

    app.add_middleware(
        ServiceMiddleware,
        service=service,
        default_limit=settings.http.max_body_bytes,
        body_limits=body_limits,
    )
    return app


def serve(app: FastAPI, settings: ServiceSettings, service: str) -> None:
    """Runs the app with uvicorn on the configured host (127.0.0.1 unless ops bind wider)."""
    configure_logging(service, settings.log_level)
    uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_config=None)
