"""Bearer-token auth: one check for every door (the service kit's routes, the KServe model server's
REST middleware, and its gRPC metadata), so every service answers the same way."""

from __future__ import annotations

import hmac

from fastapi import Request

from worldloom.core.service.errors import ApiError

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


class BearerAuth:
    """A FastAPI dependency for every route except health, metrics and docs."""

    def __init__(self, tokens: list[str], required: bool = True) -> None:
        self.check = BearerTokens(tokens, required)

    async def __call__(self, request: Request) -> None:
        problem = self.check.problem(request.headers.get("authorization"))
        if problem is not None:
            raise ApiError(401, "unauthorized", problem)
