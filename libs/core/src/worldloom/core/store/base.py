"""The object-store contract and key validation (keys come from users: never trust them)."""

from __future__ import annotations

import io
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, TypeVar

from pydantic import BaseModel

from worldloom.core.errors import DependencyUnavailable

MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


R = TypeVar("R", bound=BaseModel)


class InvalidKey(ValueError):
    """A key that could escape its prefix or break a backend (.., absolute, control chars, too long)."""


class ObjectNotFound(KeyError):
    pass


class StoreUnavailable(DependencyUnavailable, OSError):
    """The object store did not answer (connection refused, timeouts, 5xx after the client's retries)."""

    code = "store_unavailable"


def validate_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise InvalidKey("object key contains control characters")
    if key.startswith("/") or "\\" in key or re.match(r"^[A-Za-z]:", key):
        raise InvalidKey(f"object key must be relative with '/' separators: {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidKey(f"object key has an empty, '.' or '..' segment: {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str | None = None
    last_modified: datetime | None = None


class ObjectStore(ABC):
    """Every write is all-or-nothing: a reader never sees a half-written object."""

    @abstractmethod
    def put_file(
        self, key: str, fileobj: BinaryIO, length: int = -1, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Streams a file object into the store (multipart for large objects)."""

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectInfo:
        return self.put_file(key, io.BytesIO(data), len(data), content_type)

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object; the caller closes it. Raises ObjectNotFound."""

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def get_record(self, key: str, model: type[R]) -> R:
        """A JSON record read back as its model; raises ObjectNotFound (and pydantic's ValidationError)."""
        return model.model_validate_json(self.get_bytes(key))

    def put_record(self, key: str, record: BaseModel, *, exclude: set[str] | None = None) -> ObjectInfo:
        """Writes a record as indented JSON: every record in the store has this one shape."""
        return self.put_bytes(key, record.model_dump_json(indent=2, exclude=exclude).encode(), "application/json")

    def create_record(self, key: str, record: BaseModel) -> bool:
        """Writes a record only if ``key`` does not exist yet (put_bytes_if): False when another writer,
        in any process or replica, created it first. What a counter like a dataset version needs."""
        data = record.model_dump_json(indent=2).encode()
        return self.put_bytes_if(key, data, None, "application/json") is not None

    def download(self, key: str, path: str, chunk_size: int = 1 << 20) -> None:
        with self.open(key) as src, open(path, "wb") as dst:
            while chunk := src.read(chunk_size):
                dst.write(chunk)

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Raises ObjectNotFound."""

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
            return True
        except ObjectNotFound:
            return False

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects under prefix, recursively, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Deleting a missing object is not an error."""

    @abstractmethod
    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        """A URL that lets a client without credentials read the object."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """The canonical URI that events carry (s3://bucket/key or file:///path)."""

    @abstractmethod
    def key_from_uri(self, uri: str) -> str:
        """Inverse of uri(); raises InvalidKey for a URI outside this store."""

    # ------------------------------------------------------------ conditional writes (claims, counters)

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and the ETag of exactly those bytes (one read, no race). Raises ObjectNotFound."""

    @abstractmethod
    def put_bytes_if(self, key: str, data: bytes, etag: str | None,
                     content_type: str = "application/octet-stream") -> str | None:
        """Atomic conditional write: with ``etag=None`` create ``key`` only if it does not exist, else replace
        it only if its current ETag is ``etag``. Returns the new ETag, or None when the condition failed
        (another writer got there first). Of several writers racing, across processes and hosts, exactly
        one wins: what replicas use for claims, leases and counters instead of thread locks."""

    def healthy(self) -> bool:
        return True
