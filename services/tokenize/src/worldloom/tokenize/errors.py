"""One exception type for every refusal the service explains to its caller (mapped to a 4xx)."""

from __future__ import annotations


class TokenizeError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
