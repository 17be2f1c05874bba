"""Pure-ASGI middleware (streaming-safe): request ids, access logs, HTTP metrics, body-size limits and
the bounds on JSON bodies (depth, number length)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worldloom.core.service.errors import BodyTooLarge, error_body
from worldloom.core.service.jsonbody import json_problem
from worldloom.core.service.logging import request_id_var

log = logging.getLogger("worldloom.http")

REQUESTS = Counter(
    "worldloom_http_requests_total", "HTTP requests", ["service", "method", "route", "status"]
)
LATENCY = Histogram(
    "worldloom_http_request_seconds", "HTTP request latency", ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class ServiceMiddleware:
    """Wraps the whole app; `body_limits` maps (method, path) to a byte limit, others get `default_limit`."""

    def __init__(
        self,
        app: ASGIApp,
        service: str,
        default_limit: int,
        body_limits: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.default_limit = default_limit
        self.body_limits = dict(body_limits or {})

    def limit_for(self, method: str, path: str) -> int:
        return self.body_limits.get((method, path), self.default_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")[:128] or uuid.uuid4().hex
        token = request_id_var.set(rid)
        method, path = scope["method"], scope["path"]
        limit = self.limit_for(method, path)
        status = {"code": 500, "started": False}
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._too_large(send_wrapper, limit)
                return
            limited = _limited(receive, limit)
            if _is_json(headers.get("content-type", "")):
                body, limited = await _buffered(limited)
                if problem := json_problem(body):
                    await self._send_json(send_wrapper, 400, error_body(
                        "invalid_json", f"the JSON body is refused: {problem}"))
                    return
            await self.app(scope, limited, send_wrapper)
        except BodyTooLarge as exc:
            if not status["started"]:
                await self._too_large(send_wrapper, exc.limit)
        except Exception:  # last resort: the caller gets our error shape, the log gets the traceback
            log.exception("unhandled error")
            if not status["started"]:
                await self._send_json(send_wrapper, 500, error_body(
                    "internal", "internal error; see the service log for this request_id"))
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - start
            REQUESTS.labels(self.service, method, label, str(status["code"])).inc()
            LATENCY.labels(self.service, method, label).observe(elapsed)
            log.info(
                "%s %s -> %s", method, path, status["code"],
                extra={"status": status["code"], "route": label, "duration_ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(token)

    @classmethod
    async def _too_large(cls, send: Send, limit: int) -> None:
        body = error_body("payload_too_large", f"request body exceeds the limit of {limit} bytes")
        await cls._send_json(send, 413, body, close=True)

    @staticmethod
    async def _send_json(send: Send, status: int, body: dict, close: bool = False) -> None:
        headers = [(b"content-type", b"application/json")]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """Reads the whole (size-limited) body, and a receive that hands it to the app again."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


#: sent with every HTML page: scripts, styles and media from the service itself only (the pages embed
#: their own inline scripts and styles), no framing, no referrer leaks
HTML_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; object-src 'none'; "
               "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


#: FastAPI's Swagger UI and ReDoc pages load their scripts and styles from this CDN
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
               "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
               "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
               "font-src 'self' https://fonts.gstatic.com; worker-src 'self' blob:; frame-ancestors 'none'")
DOCS_PATHS = frozenset({"/docs", "/redoc"})


class SecurityHeadersMiddleware:
    """``X-Content-Type-Options: nosniff`` on every response (a browser never guesses a type, e.g. runs an
    uploaded file as script) and a Content-Security-Policy, no framing and no referrer on HTML pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff")]
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.startswith(b"text/html"):
                    policy = DOCS_POLICY if scope["path"] in DOCS_PATHS else HTML_POLICY
                    extra += [(b"content-security-policy", policy.encode()), (b"x-frame-options", b"DENY"),
                              (b"referrer-policy", b"no-referrer")]
                message["headers"] = headers + [(k, v) for k, v in extra if k not in names]
            await send(message)

        await self.app(scope, receive, with_headers)
