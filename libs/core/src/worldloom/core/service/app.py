"""The app factory: one call gives a service health/ready/metrics, auth, limits, errors and logs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager

import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worldloom.core.scratch import remove_stale_scratch
from worldloom.core.service.auth import KIT_PUBLIC, BearerAuthMiddleware, BearerTokens
from worldloom.core.service.errors import ERROR_RESPONSES, install_error_handlers
from worldloom.core.service.logging import configure_logging
from worldloom.core.service.middleware import SecurityHeadersMiddleware, ServiceMiddleware
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
    public_paths: Sequence[str] = (),
) -> FastAPI:
    """Builds a FastAPI app; every path needs the bearer token except health, metrics, the docs and
    ``public_paths`` (e.g. a static page that asks its user for a token)."""
    app = FastAPI(
        title=f"Worldloom {service}",
        version=version,
        description=description,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    remove_stale_scratch()  # what killed processes of this host left in the temp dir
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

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics (text exposition format 0.0.4)",
             response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                              "description": "every metric of this process"}})
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # The token is checked by BearerAuthMiddleware before the body is read; the HTTPBearer dependency
    # only declares the scheme in the OpenAPI document (auto_error=False: it refuses nothing itself).
    documented = HTTPBearer(auto_error=False, description="one of the service's API tokens")
    for router in routers:
        app.include_router(router, dependencies=[Depends(documented)], responses=ERROR_RESPONSES)

    app.add_middleware(
        ServiceMiddleware,
        service=service,
        default_limit=settings.http.max_body_bytes,
        body_limits=body_limits,
    )
    app.add_middleware(BearerAuthMiddleware, tokens=BearerTokens(settings.http.tokens(), settings.http.auth_required),
                       public=(*KIT_PUBLIC, *public_paths))
    app.add_middleware(SecurityHeadersMiddleware)
    return app


def serve(app: FastAPI, settings: ServiceSettings, service: str) -> None:
    """Runs the app with uvicorn on the configured host (127.0.0.1 unless ops bind wider)."""
    configure_logging(service, settings.log_level)
    uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_config=None)
