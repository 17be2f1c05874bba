"""One exception type for every refusal the service explains to its caller (mapped to a 4xx)."""

from __future__ import annotations

from worldloom.core.errors import Refusal


class TokenizeError(Refusal):
    """A refused tokenize request."""
