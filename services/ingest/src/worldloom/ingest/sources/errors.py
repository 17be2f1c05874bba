"""One error type for the sources, carrying the HTTP status the API answers with."""

from __future__ import annotations


class SourceError(Exception):
    """A refused or failed recording: `status` for HTTP, `code` a stable name, `message` for humans."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
