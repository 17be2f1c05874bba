"""Ingest over HTTP on the embedded defaults: idempotency, every kind of bad input, nothing half-written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from worldloom.core import events
from worldloom.testkit.uploads import published, upload
from worldloom.video import synthetic

AUTH = {"Authorization": "Bearer test-token"}


def _upload(client, path: Path, name: str | None = None, **extra):
    return upload(client, "/v1/videos", path, name=name, headers=AUTH, **extra)


def _events(bus):
    return published(bus, events.TOPIC_VIDEOS_INGESTED)


def test_upload_real_video_stores_sidecar_and_emits_one_event(embedded, shared_data):
    client, bus, store = embedded
    video = shared_data / "video/pyscenedetect/counter.mp4"
    r = _upload(client, video, attributes=json.dumps({"camera": "front"}))
    assert r.status_code == 201, r.text
    rec = r.json()["video"]
    assert r.json()["duplicate"] is False
    assert rec["status"] == "ingested" and rec["source"] == "upload"
    assert rec["info"]["width"] == 1920 and rec["info"]["frame_count"] == 30
    assert rec["attributes"] == {"camera": "front"}
    import hashlib

    assert rec["video_id"] == hashlib.sha256(video.read_bytes()).hexdigest()
    key = store.key_from_uri(rec["uri"])
    assert store.get_bytes(key) == video.read_bytes()
    evs = _events(bus)
    assert len(evs) == 1 and evs[0].video_ingested.video_id == rec["video_id"]
    assert evs[0].event_id == rec["event_id"] and list(evs[0].lineage) == [rec["video_id"]]
    assert evs[0].video_ingested.info.fps == pytest.approx(10.0)
    assert client.get(f"/v1/videos/{rec['video_id']}", headers=AUTH).json() == rec


def test_same_bytes_twice_one_object_one_event(embedded, shared_data):
    client, bus, store = embedded
    video = shared_data / "video/pyscenedetect/delayed_start.mp4"
    first = _upload(client, video)
    second = _upload(client, video, name="other-name.mp4")
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["duplicate"] is True
    assert second.json()["video"]["video_id"] == first.json()["video"]["video_id"]
    assert len(_events(bus)) == 1
    assert len([o for o in store.list("raw/") if o.key.endswith("video.mp4")]) == 1


def _bad_inputs(tmp: Path, shared: Path) -> dict[str, tuple[Path, str, int, str]]:
    """name -> (file, uploaded filename, expected status, expected error code)."""
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    return {
        "zero_bytes": (empty, "empty.mp4", 422, "empty_file"),
        "random_bytes": (synthetic.write_random_bytes(tmp / "rand.mp4", 50_000), "rand.mp4", 422, "not_a_video"),
        "truncated": (
            synthetic.write_truncated(shared / "video/pyscenedetect/testvideo.mp4", tmp / "trunc.mp4", 0.5),
            "trunc.mp4", 422, "truncated",
        ),
        "audio_only": (synthetic.write_audio_only(tmp / "a.mp4"), "a.mp4", 422, "no_video_stream"),
        "tiny_dims": (synthetic.write_video(tmp / "tiny.mp4", width=8, height=8, frames=4), "tiny.mp4", 422, "bad_dimensions"),
        "absurd_aspect": (
            synthetic.write_video(tmp / "thin.mp4", width=2048, height=16, frames=4), "thin.mp4", 422, "bad_dimensions",
        ),
        "traversal_name": (shared / "video/pyscenedetect/counter.mp4", "../../etc/passwd", 400, "invalid_filename"),
        "backslash_name": (shared / "video/pyscenedetect/counter.mp4", "..\\x.mp4", 400, "invalid_filename"),
    }


@pytest.mark.parametrize(
    "case",
    ["zero_bytes", "random_bytes", "truncated", "audio_only", "tiny_dims", "absurd_aspect", "traversal_name",
     "backslash_name"],
)
def test_bad_input_gets_clear_4xx_and_leaves_nothing(embedded, shared_data, tmp_path, case):
    client, bus, store = embedded
    path, name, status, code = _bad_inputs(tmp_path, shared_data)[case]
    r = _upload(client, path, name=name)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and len(err["message"]) > 10
    assert list(store.list()) == []
    assert _events(bus) == []
    assert client.get("/healthz").status_code == 200  # still up


def test_oversized_upload_is_refused_with_413(embedded, tmp_path):
    client, bus, store = embedded
    big = synthetic.write_random_bytes(tmp_path / "big.mp4", 9 * 1024 * 1024)
    r = _upload(client, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert list(store.list()) == [] and _events(bus) == []


def test_multipart_mistakes_are_named(embedded, shared_data):
    client, _, store = embedded
    video = shared_data / "video/pyscenedetect/counter.mp4"
    with open(video, "rb") as f:
        r = client.post("/v1/videos", files={"file": ("c.mp4", f)}, data={"colour": "red"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_field" and "colour" in r.json()["error"]["message"]
    r = client.post("/v1/videos", data={"attributes": "{}"}, files={"x": ("a", b"")}, headers=AUTH)
    assert r.status_code == 400
    r = client.post("/v1/videos", content=b"raw bytes", headers={**AUTH, "content-type": "video/mp4"})
    assert r.status_code == 415
    with open(video, "rb") as f:
        r = client.post("/v1/videos", files={"file": ("c.mp4", f)}, data={"attributes": "{bad json"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_attributes"
    assert list(store.list()) == []


def test_import_from_store_and_its_errors(embedded, shared_data):
    client, bus, store = embedded
    data = (shared_data / "video/sintel/sintel_clip_10s.mp4").read_bytes()
    store.put_bytes("incoming/sintel.mp4", data)
    r = client.post("/v1/videos:import", json={"uri": store.uri("incoming/sintel.mp4")}, headers=AUTH)
    assert r.status_code == 201, r.text
    rec = r.json()["video"]
    assert rec["source"] == "import" and rec["filename"] == "sintel.mp4" and rec["info"]["width"] == 854
    again = client.post("/v1/videos:import", json={"uri": store.uri("incoming/sintel.mp4")}, headers=AUTH)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(_events(bus)) == 1
    cases = [
        ({"uri": "file:///etc/passwd"}, 400, "invalid_uri"),
        ({"uri": store.uri("incoming/missing.mp4")}, 404, "not_found"),
        ({"uri": store.uri("incoming/sintel.mp4"), "colour": "red"}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        r = client.post("/v1/videos:import", json=body, headers=AUTH)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body
    r = client.post("/v1/videos:import", content=b"{oops", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422


def test_list_is_paged_and_filterable(embedded, shared_data):
    client, _, _ = embedded
    ids = []
    for name in ("counter.mp4", "delayed_start.mp4", "fades.mp4"):
        ids.append(_upload(client, shared_data / "video/pyscenedetect" / name).json()["video"]["video_id"])
    page1 = client.get("/v1/videos?limit=2", headers=AUTH).json()
    assert len(page1["items"]) == 2 and page1["next_page_token"]
    page2 = client.get(f"/v1/videos?limit=2&page_token={page1['next_page_token']}", headers=AUTH).json()
    assert page2["next_page_token"] is None
    got = [v["video_id"] for v in page1["items"] + page2["items"]]
    assert got == sorted(ids)
    assert len(client.get("/v1/videos?status=ingested", headers=AUTH).json()["items"]) == 3
    assert client.get("/v1/videos?status=stored", headers=AUTH).json()["items"] == []
    assert client.get("/v1/videos?status=bogus", headers=AUTH).status_code == 422


def test_unknown_and_malformed_ids(embedded):
    client, _, _ = embedded
    assert client.get("/v1/videos/" + "0" * 64, headers=AUTH).status_code == 404
    r = client.get("/v1/videos/..%2F..%2Fetc", headers=AUTH)
    assert r.status_code == 404


def test_auth_and_metrics(embedded, shared_data):
    client, _, _ = embedded
    with open(shared_data / "video/pyscenedetect/counter.mp4", "rb") as f:
        r = client.post("/v1/videos", files={"file": ("c.mp4", f)})
    assert r.status_code == 401
    assert client.get("/v1/videos").status_code == 401
    _upload(client, shared_data / "video/pyscenedetect/counter.mp4")
    text = client.get("/metrics").text
    assert 'worldloom_ingest_videos_total{outcome="ingested"}' in text
    assert 'route="/v1/videos",service="ingest",status="201"' in text
    assert client.get("/readyz").json()["ready"] is True


def test_bus_outage_keeps_record_and_next_upload_emits(tmp_path, shared_data, ingest_settings):
    """The event is at-least-once: if the bus is down after storing, a retry emits it, once."""
    from fastapi.testclient import TestClient

    from worldloom.core.bus.inprocess import InProcessBus
    from worldloom.core.settings import StoreSettings
    from worldloom.ingest.app import build_app

    class FlakyBus(InProcessBus):
        down = True

        def publish_raw(self, topic, value, key=None, *, wait=True):
            if self.down:
                raise ConnectionError("kafka unreachable")
            super().publish_raw(topic, value, key, wait=wait)

    bus = FlakyBus()
    app = build_app(ingest_settings(store=StoreSettings(root=tmp_path / "s")), bus=bus)
    client = TestClient(app, raise_server_exceptions=False)
    video = shared_data / "video/pyscenedetect/counter.mp4"
    r = _upload(client, video)
    assert r.status_code == 503 and r.json()["error"]["code"] == "bus_unavailable"
    listed = client.get("/v1/videos", headers=AUTH).json()["items"]
    assert [v["status"] for v in listed] == ["stored"]
    bus.down = False
    r = _upload(client, video)
    assert r.status_code == 201 and r.json()["video"]["status"] == "ingested"
    assert _upload(client, video).status_code == 200
    assert len(_events(bus)) == 1


@pytest.mark.parametrize("attributes", [
    "[" * 30_000 + "]" * 30_000,                    # the parser would recurse 30,000 levels
    '{"a": ' + "1" * 5_000 + "}",                   # int() refuses 5,000 digits with a ValueError
    '{"a": {"b": ' * 40 + '"x"' + "}" * 40 + "}",  # deep objects
])
def test_hostile_attributes_json_is_a_400_not_a_500(embedded, shared_data, attributes):
    client, bus, store = embedded
    r = _upload(client, shared_data / "video/pyscenedetect/counter.mp4", attributes=attributes)
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"]["code"] == "invalid_attributes"
    assert list(store.list()) == [] and _events(bus) == []


def test_hostile_json_bodies_are_refused_before_any_route_walks_them(embedded):
    client, _, store = embedded
    deep = {"a": json.loads("[" * 500 + "]" * 500)}
    r = client.post("/v1/sources/gymnasium", json={"env": "CartPole-v1", "env_kwargs": deep}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text[:300]
    body = b'{"env": "CartPole-v1", "seed": ' + b"9" * 5_000 + b"}"
    r = client.post("/v1/sources/gymnasium", content=body, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert list(store.list()) == []


def test_still_images_are_refused_on_purpose_not_ingested_by_accident(embedded, tmp_path):
    """An image named .mp4 is not a one-frame video: ingest takes videos (still_image, 422); a bomb image
    is refused from its header (bad_dimensions) without decoding 2 GB."""
    from worldloom.video.synthetic import write_png_bomb

    client, bus, store = embedded
    for path, code in ((write_png_bomb(tmp_path / "pic.mp4", 320, 240), "still_image"),
                       (write_png_bomb(tmp_path / "bomb.mp4"), "bad_dimensions")):
        r = _upload(client, path)
        assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
        assert "/tmp" not in r.json()["error"]["message"]
    assert list(store.list()) == [] and _events(bus) == []


def test_attributes_are_bounded_by_what_curation_can_store(embedded, shared_data):
    """A value longer than the clip collections' string fields (bytes, UTF-8), a key that is no name, or too
    many entries is refused at ingest; curate would otherwise fail on Milvus three times and dead-letter."""
    from worldloom.core.catalog import ATTRIBUTE_LIMITS, clip_collections

    assert ATTRIBUTE_LIMITS.max_value_bytes == min(s.max_str_length for s in clip_collections(8, 8))
    client, bus, store = embedded
    video = shared_data / "video/pyscenedetect/counter.mp4"
    limit = ATTRIBUTE_LIMITS.max_value_bytes
    for attrs in ({"dataset": "x" * 3000}, {"caption": "é" * (limit // 2 + 1)}, {"": "v"}, {"k\x00": "v"},
                  {"k" * 300: "v"}, {f"k{i}": "v" for i in range(ATTRIBUTE_LIMITS.max_entries + 1)}):
        r = _upload(client, video, attributes=json.dumps(attrs))
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_attributes", (str(attrs)[:40], r.text)
        r = client.post("/v1/videos:import", json={"uri": store.uri("incoming/x.mp4"), "attributes": attrs},
                        headers=AUTH)
        assert r.status_code in (400, 422) and r.json()["error"]["code"] in ("invalid_attributes", "invalid_request")
    assert list(store.list()) == [] and _events(bus) == []
    r = _upload(client, video, attributes=json.dumps({"dataset": "x" * limit, "caption": "é" * (limit // 2)}))
    assert r.status_code == 201, r.text


@pytest.mark.integration
def test_a_broker_outage_then_a_retry_is_one_event(tmp_path, shared_data, ingest_settings):
    """The broker stops answering (SIGSTOP) while an upload waits for videos.ingested: the 503 says the event
    may still be delivered, and it is once the broker is back; the retry re-emits the same event (id derived
    from the video id), so however many copies arrive, they are one event to every consumer."""
    import os
    import signal

    from fastapi.testclient import TestClient
    from kafka import KafkaConsumer

    from worldloom.core.settings import BusSettings, StoreSettings
    from worldloom.ingest.app import build_app
    from worldloom.testkit.kafka import KafkaServer

    with KafkaServer() as kafka:
        bus_settings = BusSettings(kind="kafka", bootstrap_servers=kafka.bootstrap_servers, partitions=1,
                                   client_id="outage-test")
        app = build_app(ingest_settings(store=StoreSettings(root=tmp_path / "s"), bus=bus_settings))
        video = shared_data / "video/pyscenedetect/counter.mp4"
        with TestClient(app, raise_server_exceptions=False) as client:
            app.state.ingest.bus.ensure_topics([events.TOPIC_VIDEOS_INGESTED])
            app.state.ingest.bus.publish_raw("outage.warmup", b"connected")  # the producer is connected
            assert kafka.pid is not None
            os.kill(kafka.pid, signal.SIGSTOP)
            try:
                r = _upload(client, video)
            finally:
                os.kill(kafka.pid, signal.SIGCONT)
            assert r.status_code == 503 and r.json()["error"]["code"] == "bus_unavailable", r.text
            assert "may" in r.json()["error"]["message"]
            retry = _upload(client, video)
            assert retry.status_code == 201, retry.text
            assert _upload(client, video).status_code == 200
        record = retry.json()["video"]
        raw = KafkaConsumer(events.TOPIC_VIDEOS_INGESTED, bootstrap_servers=kafka.bootstrap_servers,
                            auto_offset_reset="earliest", consumer_timeout_ms=5000, group_id=None)
        ids = [events.decode(m.value).event_id for m in raw]
        raw.close()
    print(f"videos.ingested on the topic: {len(ids)} message(s), {len(set(ids))} event id(s)")
    assert ids and set(ids) == {record["event_id"]} == {events.effect_id(events.TOPIC_VIDEOS_INGESTED, record["video_id"])}


def test_errors_do_not_show_server_paths(embedded):
    client, _, store = embedded
    r = client.post("/v1/videos:import", json={"uri": "file:///etc/passwd"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_uri"
    assert str(store.root) not in r.text and "/tmp" not in r.text, r.text


def test_a_restart_announces_what_the_bus_refused(tmp_path, shared_data, ingest_settings):
    """Resume re-emits a missing event: a video left "stored" by a bus outage is announced when the service
    starts again, without anyone uploading it a second time."""
    from fastapi.testclient import TestClient

    from worldloom.core.bus.inprocess import InProcessBus
    from worldloom.core.settings import StoreSettings
    from worldloom.ingest.app import build_app

    class DownBus(InProcessBus):
        def publish_raw(self, topic, value, key=None, *, wait=True):
            raise ConnectionError("kafka unreachable")

    settings = ingest_settings(store=StoreSettings(root=tmp_path / "s"))
    with TestClient(build_app(settings, bus=DownBus()), raise_server_exceptions=False) as client:
        assert _upload(client, shared_data / "video/pyscenedetect/counter.mp4").status_code == 503
    bus = InProcessBus()
    with TestClient(build_app(settings, bus=bus), raise_server_exceptions=False) as client:
        for _ in range(100):
            if [v["status"] for v in client.get("/v1/videos", headers=AUTH).json()["items"]] == ["ingested"]:
                break
            time.sleep(0.05)
        items = client.get("/v1/videos", headers=AUTH).json()["items"]
    assert [v["status"] for v in items] == ["ingested"]
    assert [e.event_id for e in _events(bus)] == [items[0]["event_id"]]
