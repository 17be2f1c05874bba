"""Bearer-token auth: one check for every door (the service kit's routes, the KServe model server's REST
routes and its gRPC metadata), so every service answers the same way.

The check runs as ASGI middleware, before anything reads the body: a request without a valid token is a
401 whatever it carries (malformed JSON, an oversized upload), and learns nothing about the API.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from worldloom.core.service.errors import error_body

MISSING = "missing bearer token (send 'Authorization: Bearer <token>')"
INVALID = "invalid bearer token"


class BearerTokens:
    """The configured tokens; :meth:`problem` compares in constant time."""

    def __init__(self, tokens: list[str], required: bool = True) -> None:
        self.tokens = [t.encode() for t in tokens]
        self.required = required

    def problem(self, authorization: str | None) -> str | None:
        """None when ``authorization`` (the header value, ``Bearer <token>``) is accepted, else why not."""
        if not self.required:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return MISSING
        supplied = token.strip().encode()
        # compare against every token (no early exit), so timing says nothing about which one is close
        matches = [hmac.compare_digest(supplied, t) for t in self.tokens]
        return None if any(matches) else INVALID


#: what the service kit leaves open: probes, metrics and the API docs
KIT_PUBLIC = ("/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


class BearerAuthMiddleware:
    """Pure ASGI: ``Authorization: Bearer <token>`` on every HTTP path except ``public`` ones (exact paths,
    or a compiled pattern for servers with parametrised public routes)."""

    def __init__(self, app: ASGIApp, tokens: BearerTokens, public: Iterable[str] | re.Pattern[str] = KIT_PUBLIC) -> None:
        self.app, self.tokens = app, tokens
        self.public = public if isinstance(public, re.Pattern) else frozenset(public)

    def is_public(self, path: str) -> bool:
        if isinstance(self.public, re.Pattern):
            return self.public.match(path) is not None
        return path in self.public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = ""
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                header = value.decode("latin-1")
        problem = self.tokens.problem(header)
        if problem is None:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": json.dumps(error_body("unauthorized", problem)).encode()})
