"""A directory as object store: the embedded mode's default, no server needed."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from worldloom.core.store.base import InvalidKey, ObjectInfo, ObjectNotFound, ObjectStore, validate_key

_TMP_PREFIX = ".tmp-"


class LocalStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if self.root not in path.parents:  # symlinks in the tree must not lead out either
            raise InvalidKey(f"object key escapes the store: {key!r}")
        return path

    def put_file(
        self, key: str, fileobj: BinaryIO, length: int = -1, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                if length >= 0:
                    remaining = length
                    while remaining > 0 and (chunk := fileobj.read(min(remaining, 1 << 20))):
                        out.write(chunk)
                        remaining -= len(chunk)
                else:
                    shutil.copyfileobj(fileobj, out, 1 << 20)
            os.replace(tmp, path)  # atomic: readers see the old object or the whole new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.stat(key)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key)
        return ObjectInfo(key, st.st_size, None, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        keys = []
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):
            try:
                info = self.stat(key)
            except ObjectNotFound:  # deleted since the walk (e.g. a released claim): skipped, as S3 would
                continue
            yield info

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        return self._path(key).as_uri()

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    # conditional writes: an flock per key serialises them across processes on this machine (the embedded
    # mode's replicas); the ETag is the MD5 of the content, as S3 gives for single-part objects

    @contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        lock = self.root / f"{_TMP_PREFIX}lock-{hashlib.sha256(key.encode()).hexdigest()[:32]}"
        with open(lock, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        with self._key_lock(key):
            data = self.get_bytes(key)
        return data, hashlib.md5(data).hexdigest()

    def put_bytes_if(self, key: str, data: bytes, etag: str | None,
                     content_type: str = "application/octet-stream") -> str | None:
        path = self._path(key)
        with self._key_lock(key):
            if etag is None:
                if path.exists():
                    return None
            else:
                try:
                    if hashlib.md5(path.read_bytes()).hexdigest() != etag.strip('"'):
                        return None
                except FileNotFoundError:
                    return None
            self.put_bytes(key, data, content_type)
        return hashlib.md5(data).hexdigest()

    def key_from_uri(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise InvalidKey(f"not a file:// URI of this store: {uri!r}")
        path = Path(unquote(parsed.path))
        if self.root not in path.parents:
            raise InvalidKey(f"URI is outside this store: {uri!r}")  # the store's root is no caller's business
        return validate_key(path.relative_to(self.root).as_posix())
