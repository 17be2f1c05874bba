"""The catalog: typed records in the store, one dataset reader, one clip id rule, one Milvus row shape."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from worldloom.core.catalog import (
    CLIP_SCALARS, ClipRecord, DatasetManifest, Rejection, clip_meta_key, clip_row, dataset_key, iter_clip_records,
    latest_dataset_versions, read_clip, read_dataset,
)
from worldloom.core.store import InvalidKey, ObjectNotFound
from worldloom.core.store.local import LocalStore

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _clip(clip_id: str, **kw) -> ClipRecord:
    base = dict(clip_id=clip_id, video_id="v" * 64, source="bridge", status="accepted", start_frame=0, end_frame=30,
                start_s=0.0, end_s=1.0, duration_s=1.0, fps=30.0, width=64, height=48, caption="a pot",
                tags=["bridge"], scores={"motion_mean": 2.5, "sharpness": 90.0, "brightness": 120.0},
                phash=["00ff00ff00ff00ff"], config_hash="h", created_at=NOW)
    return ClipRecord(**{**base, **kw})


def test_records_round_trip_and_clip_ids_are_checked(tmp_path) -> None:
    store = LocalStore(tmp_path)
    rec = _clip("a" * 32, status="rejected", rejections=[Rejection(filter="min_motion", reason="too static",
                                                                     value=0.1, threshold=0.15)])
    store.put_record(clip_meta_key(rec.clip_id), rec)
    assert read_clip(store, rec.clip_id) == rec
    assert store.get_record(clip_meta_key(rec.clip_id), ClipRecord).rejections[0].to_dict()["threshold"] == 0.15
    for bad in ("..", "../x", "a/b", "", ".hidden", "x" * 129):
        with pytest.raises(ObjectNotFound):
            read_clip(store, bad)
    store.put_record(clip_meta_key("b" * 32), _clip("b" * 32))
    store.put_bytes(f"clips/{'b' * 32}/thumb.jpg", b"\xff\xd8")
    assert [r.clip_id for r in iter_clip_records(store)] == ["a" * 32, "b" * 32]


def test_one_dataset_reader_for_latest_and_pinned_versions(tmp_path) -> None:
    store = LocalStore(tmp_path)
    for name, version in (("picks", 1), ("picks", 2), ("picks", 10), ("picks-2", 1)):
        store.put_record(dataset_key(name, version), DatasetManifest(name=name, version=version, created_at=NOW,
                                                                     clip_ids=[], clips=[]))
    store.put_bytes("datasets/picks/notes.txt", b"not a manifest")
    assert latest_dataset_versions(store) == {"picks": 10, "picks-2": 1}
    assert latest_dataset_versions(store, "picks") == {"picks": 10}  # not confused by picks-2
    assert read_dataset(store, "picks").version == 10 and read_dataset(store, "picks", 2).version == 2
    with pytest.raises(ObjectNotFound):
        read_dataset(store, "missing")
    with pytest.raises(ObjectNotFound):
        read_dataset(store, "picks", 3)
    with pytest.raises(InvalidKey):
        read_dataset(store, "..", 1)


def test_milvus_rows_hold_exactly_the_declared_scalars() -> None:
    rec = _clip("c" * 32)
    row = clip_row(rec, "frame", f"{rec.clip_id}:3", [0.5, 0.25])
    assert set(row) == set(CLIP_SCALARS) | {"id", "vector"}
    assert row["id"] == f"{rec.clip_id}:3" and row["clip_id"] == rec.clip_id and row["kind"] == "frame"
    assert (row["motion"], row["sharpness"], row["brightness"]) == (2.5, 90.0, 120.0)
    assert row["phash"] == "00ff00ff00ff00ff" and row["vector"] == [0.5, 0.25]
