"""One JSON error shape for every service: {"error": {"code", "message", "request_id", "details"}}."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from worldloom.core.errors import DependencyUnavailable, Refusal
from worldloom.core.scratch import without_paths
from worldloom.core.service.logging import request_id_var
from worldloom.core.store.base import InvalidKey


class ApiError(Refusal):
    """Raise from a route to answer with a clear 4xx/5xx; `code` is stable, `message` is for humans."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(status, code, message)
        self.details = details


class BodyTooLarge(Exception):
    """Raised while the body streams in, as soon as it passes the route's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id_var.get()}
    if details is not None:
        body["details"] = details
    return {"error": body}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable (e.g. not_a_video, model_not_found)")
    message: str = Field(description="a sentence for humans: what is wrong and what to do")
    request_id: str | None = None
    details: Any = None


class ErrorBody(BaseModel):
    """The one error shape every Worldloom service answers with."""

    error: ErrorDetail


#: the refusals a route may answer, documented on every API route of the kit's apps
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in (
        (400, "bad input the request's schema cannot express (e.g. an unreadable upload)"),
        (401, "missing or invalid bearer token"),
        (404, "no such object (video, clip, job, model, dataset)"),
        (409, "the object is not in a state that allows this (e.g. a job still running)"),
        (413, "the request or a value in it is larger than the configured limit"),
        (415, "unsupported media type"),
        (422, "invalid request: the stable code and a reason say which field"),
        (503, "a dependency (bus, store, vector index) is unavailable; retry later"),
    )
}

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type"}


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refusal)
    async def _refusal(_: Request, exc: Refusal) -> JSONResponse:
        return error_response(exc.status, exc.code, without_paths(exc.message), getattr(exc, "details", None))

    @app.exception_handler(DependencyUnavailable)
    async def _unavailable(_: Request, exc: DependencyUnavailable) -> JSONResponse:
        # nothing was done: the caller may retry the same request once the dependency is back
        return error_response(503, exc.code, without_paths(f"{exc}; nothing was stored, retry later"),
                              headers={"retry-after": "5"})

    @app.exception_handler(InvalidKey)
    async def _invalid_key(_: Request, exc: InvalidKey) -> JSONResponse:
        # keys are built from ids and names users send; one that cannot be a key names nothing stored
        return error_response(400, "invalid_key", without_paths(f"not a valid id or name: {exc}"))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, "payload_too_large", str(exc), headers={"connection": "close"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()
        ]
        return error_response(422, "invalid_request", _validation_message(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))
