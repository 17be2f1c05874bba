import io

import pytest

from worldloom.core.store import InvalidKey, ObjectNotFound, validate_key
from worldloom.core.store.local import LocalStore


@pytest.mark.parametrize(
    "key",
    ["", "/abs/path", "../escape", "a/../../b", "a//b", "a/./b", "a\\b", "C:/x", "a\x00b", "a\nb", "x" * 1025, "a/"],
)
def test_hostile_keys_are_refused(key):
    with pytest.raises(InvalidKey):
        validate_key(key)


@pytest.mark.parametrize("key", ["raw/abc/video.mp4", "a", "clips/2024/x y.mp4", "ü/ñ.json"])
def test_ordinary_keys_pass(key):
    assert validate_key(key) == key


def test_local_store_round_trip_list_delete(tmp_path):
    store = LocalStore(tmp_path / "s")
    store.put_bytes("raw/a/meta.json", b"{}")
    info = store.put_file("raw/a/video.mp4", io.BytesIO(b"x" * 5000), 5000)
    assert info.size == 5000
    assert store.get_bytes("raw/a/video.mp4") == b"x" * 5000
    assert [o.key for o in store.list("raw/")] == ["raw/a/meta.json", "raw/a/video.mp4"]
    assert store.key_from_uri(store.uri("raw/a/video.mp4")) == "raw/a/video.mp4"
    store.delete("raw/a/video.mp4")
    store.delete("raw/a/video.mp4")  # idempotent
    assert not store.exists("raw/a/video.mp4")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("raw/a/video.mp4")


def test_failed_write_leaves_nothing(tmp_path):
    store = LocalStore(tmp_path)

    class Broken(io.RawIOBase):
        def read(self, n=-1):
            raise OSError("client went away")

    with pytest.raises(OSError):
        store.put_file("raw/x", Broken())
    assert list(store.list()) == []
    assert list(tmp_path.rglob("*.tmp-*")) == [] and [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_symlink_escape_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store = LocalStore(tmp_path / "s")
    (store.root / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        store.put_bytes("link/evil", b"x")


def test_uri_from_elsewhere_is_refused(tmp_path):
    store = LocalStore(tmp_path / "s")
    with pytest.raises(InvalidKey):
        store.key_from_uri("file:///etc/passwd")
    with pytest.raises(InvalidKey):
        store.key_from_uri("s3://bucket/key")


def test_listing_skips_objects_deleted_while_it_runs(tmp_path):
    """A claim released between the folder walk and its stat is left out, not an error (a poller
    counting markers beside claims hit that)."""
    store = LocalStore(tmp_path)
    for name in ("a.done", "b.claim", "c.done"):
        store.put_bytes(f"tokens/t/{name}", b"x")
    listing = store.list("tokens/t/")
    assert next(listing).key == "tokens/t/a.done"
    store.delete("tokens/t/b.claim")
    assert [o.key for o in listing] == ["tokens/t/c.done"]
