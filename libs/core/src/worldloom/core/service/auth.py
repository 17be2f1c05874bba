"""Bearer-token auth for every route except health, metrics and docs."""

from __future__ import annotations

import hmac

from fastapi import Request

from worldloom.core.service.errors import ApiError


class BearerAuth:
    """A FastAPI dependency; constant-time comparison against the configured tokens."""

    def __init__(self, tokens: list[str], required: bool = True) -> None:
        self.tokens = [t.encode() for t in tokens]
        self.required = required

    async def __call__(self, request: Request) -> None:
        if not self.required:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "missing bearer token (send 'Authorization: Bearer <token>')")
        supplied = token.strip().encode()
        if not any(hmac.compare_digest(supplied, t) for t in self.tokens):
            raise ApiError(401, "unauthorized", "invalid bearer token")
