"""S3Store against a real S3 server (SeaweedFS) started by worldloom.testkit."""

from __future__ import annotations

import io
import os

import httpx
import pytest

from worldloom.core.store import InvalidKey, ObjectNotFound
from worldloom.core.store.s3 import S3Store

pytestmark = pytest.mark.integration


class _Stream(io.RawIOBase):
    """A non-seekable stream of unknown length, like an HTTP body: forces a multipart upload."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(n)


def test_round_trip_multipart_list_presign_delete(s3_settings):
    store = S3Store(s3_settings)
    big = os.urandom(12 * 1024 * 1024 + 17)  # three parts of 5 MiB
    store.put_file("raw/a/video.mp4", _Stream(big), -1, "video/mp4")
    store.put_bytes("raw/a/meta.json", b'{"ok": true}', "application/json")
    assert store.stat("raw/a/video.mp4").size == len(big)
    assert store.get_bytes("raw/a/video.mp4") == big
    assert [o.key for o in store.list("raw/")] == ["raw/a/meta.json", "raw/a/video.mp4"]
    url = store.presigned_url("raw/a/meta.json", 60)
    assert httpx.get(url).content == b'{"ok": true}'
    assert store.key_from_uri(store.uri("raw/a/video.mp4")) == "raw/a/video.mp4"
    store.delete("raw/a/video.mp4")
    store.delete("raw/a/video.mp4")
    assert not store.exists("raw/a/video.mp4")
    with pytest.raises(ObjectNotFound):
        store.open("raw/a/video.mp4")
    assert store.healthy()


def test_hostile_keys_and_foreign_uris_are_refused(s3_settings):
    store = S3Store(s3_settings)
    for key in ("../x", "/abs", "a//b", "a\x00"):
        with pytest.raises(InvalidKey):
            store.put_bytes(key, b"x")
    with pytest.raises(InvalidKey):
        store.key_from_uri("s3://another-bucket/key")
    assert list(store.list()) == []


def test_interrupted_upload_leaves_no_object(s3_settings):
    store = S3Store(s3_settings)

    class Dies(io.RawIOBase):
        sent = 0

        def readable(self):
            return True

        def read(self, n=-1):
            if self.sent > 6 * 1024 * 1024:
                raise ConnectionResetError("client vanished mid-upload")
            self.sent += 1024 * 1024
            return b"x" * (1024 * 1024)

    with pytest.raises(ConnectionResetError):
        store.put_file("raw/partial", Dies(), -1)
    assert not store.exists("raw/partial")
