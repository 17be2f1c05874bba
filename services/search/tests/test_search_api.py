"""Search over a catalog curated by the real pipeline from real videos."""

from __future__ import annotations

import base64
import time

import pytest
from fastapi.testclient import TestClient

from worldloom.core import events
from worldloom.testkit.uploads import published, upload
from worldloom.video import analysis, transcode

AUTH = {"Authorization": "Bearer search-token"}


@pytest.fixture
def client(search_app):
    with TestClient(search_app, raise_server_exceptions=False) as c:
        yield c


def _accepted(catalog):
    recs = [r for r in catalog.records if r.status == "accepted"]
    assert len(recs) >= 5, "the catalog should hold several accepted clips"
    return recs


def test_own_caption_finds_the_clip_in_top3(client, catalog):
    recs = _accepted(catalog)
    found = 0
    for rec in recs:
        hits = client.post("/v1/search", json={"text": rec.caption, "top_k": 3}, headers=AUTH).json()["hits"]
        found += rec.clip_id in [h["clip_id"] for h in hits]
    assert found == len(recs), f"{found}/{len(recs)} clips found by their own caption"


def test_a_frame_of_a_clip_finds_that_clip_first(client, catalog, tmp_path):
    for rec in _accepted(catalog):
        preview = catalog.store.root / rec.renditions["preview.mp4"]
        frames = analysis.analysis_frames(preview).frames
        jpg = transcode.write_thumbnail(frames[len(frames) // 3], tmp_path / f"{rec.clip_id}.jpg", max_side=256)
        body = {"image_base64": base64.b64encode(jpg.read_bytes()).decode(), "top_k": 3}
        hits = client.post("/v1/search", json=body, headers=AUTH).json()["hits"]
        assert hits[0]["clip_id"] == rec.clip_id, (rec.clip_id, rec.start_s, [(h["clip_id"], h["start_s"], h["score"]) for h in hits])
        r = upload(client, "/v1/search:media", jpg, name="q.jpg", content_type="image/jpeg", headers=AUTH, top_k="3")
        assert r.json()["query_kind"] == "image" and r.json()["hits"][0]["clip_id"] == rec.clip_id


def test_clip_upload_and_clip_id_queries(client, catalog):
    rec = _accepted(catalog)[0]
    r = upload(client, "/v1/search:media", catalog.store.root / rec.renditions["preview.mp4"], name="q.mp4", headers=AUTH)
    assert r.status_code == 200 and r.json()["query_kind"] == "video"
    assert r.json()["hits"][0]["clip_id"] == rec.clip_id
    r = client.post("/v1/search", json={"clip_id": rec.clip_id, "top_k": 5}, headers=AUTH).json()
    assert r["query_kind"] == "clip" and rec.clip_id not in [h["clip_id"] for h in r["hits"]] and r["hits"]


def test_media_query_top_k_and_filters_are_bounded_or_refused(client, catalog):
    """search:media reads top_k and filters from form fields: out of range, too deep or too long, each is a
    422/400 with a code, never a 500 from Milvus or the JSON parser."""
    rec = _accepted(catalog)[0]
    clip = catalog.store.root / rec.renditions["preview.mp4"]
    cases = [
        ({"top_k": "0"}, 422, "invalid_request"), ({"top_k": "-3"}, 422, "invalid_request"),
        ({"top_k": "101"}, 422, "invalid_request"), ({"top_k": "64000"}, 422, "invalid_request"),
        ({"top_k": "7" * 5000}, 422, "invalid_request"),
        ({"filters": "[" * 30_000}, 400, "invalid_request"),
        ({"filters": '{"min_width": ' + "1" * 5_000 + "}"}, 400, "invalid_request"),
    ]
    for fields, status, code in cases:
        r = upload(client, "/v1/search:media", clip, name="q.mp4", headers=AUTH, **fields)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (str(fields)[:40], r.text[:200])
    r = upload(client, "/v1/search:media", clip, name="q.mp4", headers=AUTH, top_k="100")
    assert r.status_code == 200 and len(r.json()["hits"]) <= 100


def test_filters_restrict_results(client, catalog):
    body = {"text": "robot arm moves an object", "top_k": 50, "filters": {"sources": ["sintel"]}}
    hits = client.post("/v1/search", json=body, headers=AUTH).json()["hits"]
    assert hits and all(h["source"] == "sintel" for h in hits)
    body["filters"] = {"min_duration_s": 5.0}
    assert all(h["duration_s"] >= 5.0 for h in client.post("/v1/search", json=body, headers=AUTH).json()["hits"])
    body["filters"] = {"tags_any": ["bridge"]}
    hits = client.post("/v1/search", json=body, headers=AUTH).json()["hits"]
    assert hits and all("bridge" in h["tags"] for h in hits)
    one = _accepted(catalog)[0]
    body["filters"] = {"video_id": one.video_id}
    assert {h["video_id"] for h in client.post("/v1/search", json=body, headers=AUTH).json()["hits"]} == {one.video_id}


def test_media_of_hits_is_served(client, catalog):
    rec = _accepted(catalog)[0]
    hit = client.post("/v1/search", json={"text": rec.caption, "top_k": 1}, headers=AUTH).json()["hits"][0]
    for url, ctype in ((hit["thumbnail_url"], "image/jpeg"), (hit["preview_url"], "image/gif"), (hit["video_url"], "video/mp4")):
        r = client.get(url, headers=AUTH)
        assert r.status_code == 200 and r.headers["content-type"] == ctype and len(r.content) > 100
    assert client.get(hit["thumbnail_url"]).status_code == 401
    assert client.get(f"/v1/clips/{rec.clip_id}/media/secret.txt", headers=AUTH).status_code == 404
    rejected = [r for r in catalog.records if r.status == "rejected"]
    if rejected:
        r = client.get(f"/v1/clips/{rejected[0].clip_id}/media/thumb.jpg", headers=AUTH)
        assert r.status_code == 404


@pytest.mark.parametrize("body, code", [
    ({}, "invalid_request"),
    ({"text": "a", "clip_id": "b"}, "invalid_request"),
    ({"text": "x", "top_k": 0}, "invalid_request"),
    ({"text": "x", "filters": {"sources": ['a" or 1==1 or "']}}, "invalid_request"),
    ({"text": "x", "filters": {"colour": "red"}}, "invalid_request"),
    ({"text": "x", "mode": "fast"}, "invalid_request"),
    ({"clip_id": "0" * 32}, "not_found"),
    ({"image_base64": "!!!notbase64"}, "invalid_image"),
    ({"image_base64": base64.b64encode(b"not an image at all").decode()}, "invalid_image"),
])
def test_bad_queries_get_clear_errors(client, body, code):
    r = client.post("/v1/search", json=body, headers=AUTH)
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == code, r.text


def test_datasets_are_versioned_and_announced(client, catalog):
    recs = _accepted(catalog)
    ids = [r.clip_id for r in recs[:3]]
    r1 = client.post("/v1/datasets", json={"name": "pick-place", "clip_ids": ids, "description": "Pick and place"},
                     headers=AUTH)
    assert r1.status_code == 201 and r1.json()["version"] == 1 and r1.json()["clip_ids"] == ids
    assert r1.json()["description"] == "Pick and place"  # accepted, so stored (and read back below)
    assert all(c["renditions"]["train.mp4"].startswith("file://") for c in r1.json()["clips"])
    r2 = client.post("/v1/datasets", json={"name": "pick-place", "query": {"text": "pot", "top_k": 2}}, headers=AUTH)
    assert r2.status_code == 201 and r2.json()["version"] == 2 and len(r2.json()["clip_ids"]) == 2
    assert client.get("/v1/datasets/pick-place", headers=AUTH).json()["version"] == 2
    assert client.get("/v1/datasets/pick-place?version=1", headers=AUTH).json()["clip_ids"] == ids
    assert client.get("/v1/datasets/pick-place?version=1", headers=AUTH).json()["description"] == "Pick and place"
    assert {"name": "pick-place", "latest_version": 2} .items() <= client.get("/v1/datasets", headers=AUTH).json()[0].items()
    evs = published(catalog.bus, events.TOPIC_DATASETS_CREATED)
    assert [(e.dataset_created.name, e.dataset_created.version) for e in evs][-2:] == [("pick-place", 1), ("pick-place", 2)]
    for e in evs[-2:]:  # derived from the effect: a re-emit of one version is the same event
        assert e.event_id == events.effect_id(events.TOPIC_DATASETS_CREATED, "pick-place", str(e.dataset_created.version))
    bad = [
        ({"name": "Bad Name", "clip_ids": ids}, 422),
        ({"name": "../etc", "clip_ids": ids}, 422),
        ({"name": "ok", "clip_ids": ["f" * 32]}, 422),
        ({"name": "ok", "clip_ids": ids, "query": {"text": "x"}}, 422),
        ({"name": "ok", "clip_ids": []}, 422),
    ]
    for body, status in bad:
        assert client.post("/v1/datasets", json=body, headers=AUTH).status_code == status, body
    assert client.get("/v1/datasets/missing", headers=AUTH).status_code == 404


def test_page_openapi_and_auth(client):
    assert "Worldloom search" in client.get("/").text
    assert "/v1/search" in client.get("/openapi.json").json()["paths"]
    assert client.post("/v1/search", json={"text": "x"}).status_code == 401
    text = client.get("/metrics").text
    assert "worldloom_search_queries_total" in text


def test_a_clip_collection_of_another_dimension_stops_start_up(tmp_path):
    """Search (and curate) refuse to start on a clips collection built for another embedding size."""
    from worldloom.core.bus.inprocess import InProcessBus
    from worldloom.core.catalog import CLIP_SCALARS, VISUAL_COLLECTION
    from worldloom.core.settings import HttpSettings
    from worldloom.core.store.local import LocalStore
    from worldloom.core.vectors import CollectionSpec, VectorIndex
    from worldloom.search.app import build_app
    from worldloom.search.settings import SearchSettings

    index = VectorIndex(str(tmp_path / "v.db"))
    index.ensure_collection(CollectionSpec(VISUAL_COLLECTION, 7, CLIP_SCALARS))
    with pytest.raises(RuntimeError, match="dim"):
        build_app(SearchSettings(http=HttpSettings(api_tokens="t")), store=LocalStore(tmp_path / "s"),
                  bus=InProcessBus(), index=index)
    index.close()


def test_a_dataset_saved_while_the_bus_is_down_is_announced_at_the_next_start(catalog):
    """The manifest, then the event, then the marker of having sent it: a 503 names the saved version, and
    the next start announces it with the same event id (name + version)."""
    from worldloom.core.bus.inprocess import InProcessBus
    from worldloom.core.settings import HttpSettings
    from worldloom.search.app import build_app
    from worldloom.search.settings import SearchSettings

    class DownBus(InProcessBus):
        def publish_raw(self, topic, value, key=None, *, wait=True):
            raise ConnectionError("kafka unreachable")

    settings = SearchSettings(http=HttpSettings(api_tokens="search-token"))
    ids = [r.clip_id for r in _accepted(catalog)[:2]]
    with TestClient(build_app(settings, store=catalog.store, bus=DownBus(), index=catalog.index),
                    raise_server_exceptions=False) as client:
        r = client.post("/v1/datasets", json={"name": "zz-outage", "clip_ids": ids}, headers=AUTH)
        assert r.status_code == 503 and r.json()["error"]["code"] == "bus_unavailable", r.text
        assert "version 1" in r.json()["error"]["message"]
        assert client.get("/v1/datasets/zz-outage", headers=AUTH).json()["clip_ids"] == ids
    bus = InProcessBus()
    with TestClient(build_app(settings, store=catalog.store, bus=bus, index=catalog.index)):
        for _ in range(100):
            if published(bus, events.TOPIC_DATASETS_CREATED):
                break
            time.sleep(0.05)
    sent = published(bus, events.TOPIC_DATASETS_CREATED)
    assert [(e.dataset_created.name, e.dataset_created.version) for e in sent] == [("zz-outage", 1)]
    assert sent[0].event_id == events.effect_id(events.TOPIC_DATASETS_CREATED, "zz-outage", "1")
