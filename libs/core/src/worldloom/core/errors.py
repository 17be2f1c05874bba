"""The one shape of a refusal: HTTP status, stable machine-readable code, a sentence for humans.

Service logic raises a subclass (IngestError, TokenizeError, ...) without knowing about HTTP; the
service kit answers any Refusal that reaches a route with ``{"error": {"code", "message", ...}}``.
"""

from __future__ import annotations


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
