"""The one shape of a refusal: HTTP status, stable machine-readable code, a sentence for humans.

Service logic raises a subclass (IngestError, TokenizeError, ...) without knowing about HTTP; the
service kit answers any Refusal that reaches a route with ``{"error": {"code", "message", ...}}``.
"""

from __future__ import annotations


class DependencyUnavailable(Exception):
    """A dependency (object store, bus, vector index) cannot be reached: the input is fine and nothing was
    done, so it is worth retrying later. HTTP answers 503; a consumer rewinds its batch and retries it with
    backoff instead of spending the message's attempts (an outage never dead-letters good events)."""

    code = "dependency_unavailable"


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
