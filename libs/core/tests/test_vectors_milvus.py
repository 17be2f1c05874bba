"""VectorIndex on Milvus Lite: as a file (embedded) and through `milvus-lite server` (shared)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from worldloom.core.vectors import CollectionSpec, VectorIndex


def _exercise(index: VectorIndex) -> None:
    name = f"c_{uuid.uuid4().hex[:8]}"
    index.ensure_collection(CollectionSpec(name, 16, {"source": "str", "duration": "float", "tags": "json"}))
    index.ensure_collection(CollectionSpec(name, 16, {"source": "str", "duration": "float", "tags": "json"}))
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(50, 16)).astype(np.float32)
    rows = [{"id": f"clip{i}", "vector": vecs[i].tolist(), "source": "bridge" if i % 2 else "sintel",
             "duration": float(i), "tags": ["robot"] if i % 2 else []} for i in range(50)]
    assert index.upsert(name, rows) == 50
    assert index.upsert(name, rows[:5]) == 5  # upsert by id: no duplicates
    assert index.count(name) == 50
    hits = index.search(name, [vecs[7]], limit=3, output_fields=["source", "duration"])[0]
    assert hits[0].id == "clip7" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    filtered = index.search(name, [vecs[7]], limit=5, filter='source == "sintel" and duration >= 10')[0]
    assert filtered and all(int(h.id[4:]) % 2 == 0 and int(h.id[4:]) >= 10 for h in filtered)
    assert index.get(name, ["clip3"], ["source"])[0]["source"] == "bridge"
    index.delete(name, ids=["clip7"])
    assert index.count(name) == 49
    assert all(h.id != "clip7" for h in index.search(name, [vecs[7]], limit=5)[0])
    assert index.healthy()
    index.drop(name)


def test_milvus_lite_file(tmp_path):
    index = VectorIndex(str(tmp_path / "v.db"))
    _exercise(index)
    index.close()


@pytest.mark.integration
def test_milvus_lite_server(milvus_uri):
    index = VectorIndex(milvus_uri)
    _exercise(index)
    index.close()


def test_an_existing_collection_with_another_schema_is_refused(tmp_path):
    """A collection left by another version (other dimension, fields, types, lengths or metric) is refused
    by ensure_collection, i.e. at service start-up, naming each difference; not at the first search."""
    from worldloom.core.vectors import CollectionMismatch

    index = VectorIndex(str(tmp_path / "v.db"))
    spec = CollectionSpec("clips", 16, {"source": "str", "duration": "float"})
    index.ensure_collection(spec)
    index.ensure_collection(spec)  # the same schema: fine
    for other, named in (
        (CollectionSpec("clips", 32, spec.scalars), "dim"),
        (CollectionSpec("clips", 16, {"source": "str", "duration": "float", "tags": "json"}), "tags"),
        (CollectionSpec("clips", 16, {"source": "str"}), "duration"),
        (CollectionSpec("clips", 16, {"source": "str", "duration": "int"}), "duration"),
        (CollectionSpec("clips", 16, spec.scalars, max_str_length=512), "max_length"),
        (CollectionSpec("clips", 16, spec.scalars, metric="L2"), "metric"),
    ):
        with pytest.raises(CollectionMismatch) as err:
            index.ensure_collection(other)
        assert named in str(err.value) and "clips" in str(err.value), str(err.value)
    index.close()
