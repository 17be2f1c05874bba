"""Curate's HTTP API, its videos.ingested consumer (retries, DLQ) and the optional VLM captioner."""

from __future__ import annotations

import base64
import json
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from worldloom.core import events
from worldloom.core.catalog import curated_marker_key, iter_clip_records
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings
from worldloom.curate.app import build_app
from worldloom.curate.config import CurationConfig
from worldloom.curate.settings import CurateSettings
from worldloom.testkit.uploads import published

AUTH = {"Authorization": "Bearer curate-token"}


def _app(env, **kw):
    settings = CurateSettings(http=HttpSettings(api_tokens="curate-token"), **kw)
    return build_app(settings, store=env.store, bus=env.bus, index=env.index)


def test_runs_api_reports_progress_counts_and_clips(env, shared_data):
    vid = env.ingest(shared_data / "video/sintel/sintel_clip_10s.mp4", {"dataset": "sintel"})
    with TestClient(_app(env, consume=False), raise_server_exceptions=False) as client:
        r = client.post("/v1/curation-runs", json={"video_ids": [vid]}, headers=AUTH)
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        for _ in range(300):
            run = client.get(f"/v1/curation-runs/{run_id}", headers=AUTH).json()
            if run["state"] in ("succeeded", "failed"):
                break
            assert 0.0 <= run["percent_done"] <= 100.0
            time.sleep(0.2)
        assert run["state"] == "succeeded" and run["percent_done"] == 100.0
        assert run["stage_counts"]["split"]["clips_out"] == run["clips_total"] > 0
        assert [s["name"] for s in run["pipeline"]][0] == "split" and run["pipeline"][0]["resources"]["cpus"] > 0
        clip_id = env.store.list("clips/").__next__().key.split("/")[1]
        clip = client.get(f"/v1/clips/{clip_id}", headers=AUTH).json()
        assert clip["video_id"] == vid and "scores" in clip
        assert client.get("/v1/pipeline", headers=AUTH).json()["stages"][-1]["name"] == "write"
        bad = [
            ({"video_ids": []}, 422), ({"video_ids": ["0" * 64]}, 404), ({"video_ids": ["../../etc"]}, 404),
            ({"video_ids": [vid], "colour": 1}, 422),
            ({"video_ids": [vid], "config": {"split": {"threshold": -1}}}, 422),
            ({"video_ids": [vid], "config": {"filters": {"unknown": 1}}}, 422),
        ]
        for body, status in bad:
            assert client.post("/v1/curation-runs", json=body, headers=AUTH).status_code == status, body
        assert client.get("/v1/curation-runs/nope", headers=AUTH).status_code == 404
        assert client.get("/v1/clips/../../etc", headers=AUTH).status_code == 404
        assert client.post("/v1/curation-runs", json={"video_ids": [vid]}).status_code == 401


def test_consumer_curates_ingested_videos_and_dead_letters_bad_events(env, shared_data):
    vid = env.ingest(shared_data / "bridge/videos/val/27/rgb.mp4", {"dataset": "bridge", "instruction": "pick up pot"})
    ghost = events.new_event("ingest", events.VideoIngested(video_id="f" * 64))
    env.bus.publish(events.TOPIC_VIDEOS_INGESTED, ghost, key="f" * 64)
    env.bus.publish_raw(events.TOPIC_VIDEOS_INGESTED, b"garbage", key="x")
    with TestClient(_app(env), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(env.bus.messages(events.dlq_topic(events.TOPIC_VIDEOS_INGESTED))) < 2:
            time.sleep(0.2)
        while time.monotonic() < deadline and not env.bus.messages(events.TOPIC_CLIPS_CURATED):
            time.sleep(0.2)
        assert client.get("/healthz").status_code == 200
    curated = published(env.bus, events.TOPIC_CLIPS_CURATED)
    assert curated and all(e.clip_curated.video_id == vid for e in curated)
    letters = [events.DeadLetter.FromString(m.value) for m in env.bus.messages(events.dlq_topic(events.TOPIC_VIDEOS_INGESTED))]
    reasons = {d.key: d.error for d in letters}
    assert "not ingested" in reasons["f" * 64]
    assert "not a protobuf" in reasons["x"] or "no event_id" in reasons["x"]
    # redelivery of the same event changes nothing
    n = len(curated)
    again = events.new_event("ingest", events.VideoIngested(video_id=vid))
    svc = env.curate_service()
    svc.handle_event(again)
    assert len(env.bus.messages(events.TOPIC_CLIPS_CURATED)) == n


@pytest.mark.integration
def test_marker_is_written_only_after_kafka_acknowledged_every_curated_event(env, kafka_settings, shared_data):
    """Issue 15/2: a clips.curated event the broker refuses fails the video, so it is curated again later."""
    from kafka import KafkaConsumer
    from kafka.admin import ConfigResource, KafkaAdminClient

    from worldloom.core.bus.kafka import KafkaBus

    topic, bootstrap = events.TOPIC_CLIPS_CURATED, kafka_settings.bootstrap_servers
    env.bus = bus = KafkaBus(kafka_settings)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)

    def limit(max_bytes: int) -> None:
        admin.alter_configs([ConfigResource("TOPIC", topic, {"max.message.bytes": str(max_bytes)})])

    bus.ensure_topics([topic])
    limit(128)  # no clips.curated event fits: the broker refuses every one
    try:
        vid = env.ingest(shared_data / "bridge/videos/val/27/rgb.mp4", {"dataset": "bridge"})
        svc = env.curate_service()
        config = svc.config_for_source("bridge")
        marker = curated_marker_key(vid, svc.config_hash(config))
        refused = svc.execute(svc.new_run([vid], config), config).videos[0]
        assert not env.store.exists(marker), "marker written although its clips.curated events were lost"
        assert refused.state == "failed" and "clips.curated" in refused.error
        limit(1_048_588)
        done = svc.execute(svc.new_run([vid], config), config).videos[0]
        assert done.state == "done" and env.store.exists(marker)
    finally:
        limit(1_048_588)
        admin.close()
    accepted = set(json.loads(env.store.get_bytes(marker))["accepted"])
    raw = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000,
                        group_id=None)
    curated = [e.clip_curated for e in (events.decode(r.value) for r in raw) if e.clip_curated.video_id == vid]
    raw.close()
    assert accepted and {c.clip_id for c in curated} == accepted  # every accepted clip announced
    svc.close()
    bus.close()


def _vlm_app(calls: list, fail: bool = False, state: dict | None = None) -> FastAPI:
    """A local OpenAI-compatible chat endpoint: checks it got a real JPEG and answers a caption. ``state``
    switches it at run time: {"down": True} answers 503, {"fail_next": n} fails the next n requests."""
    app = FastAPI()
    state = state if state is not None else {}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        calls.append(body)
        if state.get("fail_next", 0) > 0:
            state["fail_next"] -= 1
            return _error()
        if fail or state.get("down"):
            return _error()
        parts = body["messages"][0]["content"]
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        jpeg = base64.b64decode(url.split(",", 1)[1])
        assert jpeg[:2] == b"\xff\xd8", "not a JPEG"
        return {"choices": [{"message": {"role": "assistant", "content": "A robot gripper above a kitchen sink."}}]}

    def _error():
        from fastapi import HTTPException

        raise HTTPException(503, "model overloaded")

    return app


def test_vlm_captions_through_openai_compatible_api_and_fallback(env, shared_data, tmp_path):
    vid = env.ingest(shared_data / "bridge/videos/train/346/rgb.mp4", {"dataset": "bridge"})
    calls: list = []
    with BackgroundServer(_vlm_app(calls)) as vlm:
        svc = env.curate_service(vlm_url=f"{vlm.url}/v1", vlm_model="test-vlm")
        config = CurationConfig()
        run = svc.execute(svc.new_run([vid], config), config)
    recs = [svc.get_clip(c) for c in _accepted_ids(env)]
    assert run.state == "succeeded" and calls and calls[0]["model"] == "test-vlm"
    assert recs and all("robot gripper above a kitchen sink" in r.caption and "vlm" in r.caption_source for r in recs)
    calls.clear()
    with BackgroundServer(_vlm_app(calls, fail=True)) as vlm:
        svc = env.curate_service(vlm_url=f"{vlm.url}/v1", vlm_model="test-vlm-2")
        config = CurationConfig()
        run = svc.execute(svc.new_run([vid], config), config)
    assert run.state == "succeeded" and calls
    fallback = [r for r in (svc.get_clip(c) for c in _accepted_ids(env)) if r.config_hash == run.config_hash]
    assert fallback and all("vlm" not in r.caption_source and "vlm_error" in r.descriptors for r in fallback)


def _accepted_ids(env) -> list[str]:
    return [r.clip_id for r in iter_clip_records(env.store) if r.status == "accepted"]


def _wait_run(client, run_id: str) -> dict:
    for _ in range(600):
        run = client.get(f"/v1/curation-runs/{run_id}", headers=AUTH).json()
        if run["state"] in ("succeeded", "failed"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


def test_a_vlm_outage_is_recorded_and_recaptioned_when_it_is_back(env, shared_data):
    """Issue 15/11: a VLM outage must not degrade captions for good. The fallback is recorded (clip and
    marker), a re-caption run re-curates exactly those videos once the VLM answers, and a video whose
    captions came from the VLM stays skipped."""
    vid = env.ingest(shared_data / "bridge/videos/train/346/rgb.mp4", {"dataset": "bridge"})
    calls: list = []
    state = {"down": True}
    with BackgroundServer(_vlm_app(calls, state=state)) as vlm, \
            TestClient(_app(env, consume=False, vlm_url=f"{vlm.url}/v1", vlm_model="test-vlm",
                            vlm_retry_backoff_s=0.01), raise_server_exceptions=False) as client:
        assert client.post("/v1/curation-runs:recaption", json={}, headers=AUTH).status_code == 404  # none yet
        run = _wait_run(client, client.post("/v1/curation-runs", json={"video_ids": [vid]}, headers=AUTH).json()["run_id"])
        assert run["state"] == "succeeded" and run["videos"][0]["captions_fallback"] == run["clips_accepted"] > 0
        marker = json.loads(env.store.get_bytes(curated_marker_key(vid, run["config_hash"])))
        assert sorted(marker["vlm_fallback"]) == sorted(marker["accepted"])
        state["down"] = False  # the VLM is back
        r = client.post("/v1/curation-runs:recaption", json={}, headers=AUTH)
        assert r.status_code == 202 and [v["video_id"] for v in r.json()["videos"]] == [vid], r.text
        again = _wait_run(client, r.json()["run_id"])
        assert again["state"] == "succeeded" and again["videos"][0]["state"] == "done"
        assert again["videos"][0]["captions_fallback"] == 0
        recs = [r for r in (client.get(f"/v1/clips/{c}", headers=AUTH).json() for c in _accepted_ids(env))]
        assert recs and all("vlm" in r["caption_source"] and "gripper" in r["caption"] for r in recs)
        assert "vlm_error" not in recs[0]["descriptors"]
        third = _wait_run(client, client.post("/v1/curation-runs", json={"video_ids": [vid]}, headers=AUTH).json()["run_id"])
        assert third["videos"][0]["state"] == "skipped"
        assert client.post("/v1/curation-runs:recaption", json={}, headers=AUTH).status_code == 404


def test_a_vlm_hiccup_is_retried_before_falling_back(env, shared_data):
    vid = env.ingest(shared_data / "bridge/videos/train/346/rgb.mp4", {"dataset": "bridge"})
    calls: list = []
    state = {"fail_next": 1}
    with BackgroundServer(_vlm_app(calls, state=state)) as vlm:
        svc = env.curate_service(vlm_url=f"{vlm.url}/v1", vlm_model="test-vlm", vlm_retry_backoff_s=0.01)
        config = CurationConfig()
        run = svc.execute(svc.new_run([vid], config), config)
    recs = [svc.get_clip(c) for c in _accepted_ids(env)]
    assert run.state == "succeeded" and recs
    assert all("vlm" in r.caption_source for r in recs), [r.descriptors.get("vlm_error") for r in recs]
    assert state["fail_next"] == 0 and len(calls) >= len(recs) + 1  # the failed request was asked again
