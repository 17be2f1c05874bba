"""One video from upload to search result, every service on real servers: Apache Kafka, SeaweedFS S3,
`milvus-lite server`, each service behind uvicorn. A redelivered event changes nothing."""

from __future__ import annotations

import json
import time
import uuid
from contextlib import ExitStack

import httpx
import pytest

from worldloom.core import events
from worldloom.core.bus.kafka import KafkaBus
from worldloom.core.catalog import curated_marker_key, token_marker_key
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, VectorSettings
from worldloom.core.store.s3 import S3Store

pytestmark = pytest.mark.integration
TOKEN = "e2e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _wait(predicate, timeout_s: float = 180.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_upload_curate_search_on_real_servers(s3_settings, kafka_settings, milvus_uri, shared_data):
    from worldloom.curate.app import build_app as curate_app
    from worldloom.curate.config import CurationConfig
    from worldloom.curate.settings import CurateSettings
    from worldloom.ingest.app import build_app as ingest_app
    from worldloom.ingest.settings import IngestSettings
    from worldloom.search.app import build_app as search_app
    from worldloom.search.settings import SearchSettings

    http = HttpSettings(api_tokens=TOKEN)
    vectors = VectorSettings(uri=milvus_uri)
    group = f"curate-{uuid.uuid4().hex[:6]}"
    episode = shared_data / "bridge/videos/val/1527/rgb.mp4"
    instruction = json.loads((shared_data / "bridge/annotation/val/1527.json").read_text())["texts"][0]
    with ExitStack() as stack:
        ingest = stack.enter_context(BackgroundServer(ingest_app(IngestSettings(store=s3_settings, bus=kafka_settings, http=http))))
        curate_a = curate_app(CurateSettings(store=s3_settings, bus=kafka_settings, http=http, vectors=vectors,
                                             consumer_group=group))
        curate = stack.enter_context(BackgroundServer(curate_a))
        search = stack.enter_context(BackgroundServer(search_app(SearchSettings(store=s3_settings, bus=kafka_settings,
                                                                                 http=http, vectors=vectors))))
        for svc in (ingest, curate, search):
            assert httpx.get(f"{svc.url}/readyz").json()["ready"] is True
        with open(episode, "rb") as f:
            r = httpx.post(f"{ingest.url}/v1/videos", headers=AUTH, timeout=60,
                           files={"file": ("rgb.mp4", f, "video/mp4")},
                           data={"attributes": json.dumps({"dataset": "bridge", "instruction": instruction})})
        assert r.status_code == 201, r.text
        video_id = r.json()["video"]["video_id"]
        store = S3Store(s3_settings)
        config_hash = curate_a.state.curate.config_hash(CurationConfig())
        _wait(lambda: store.exists(curated_marker_key(video_id, config_hash)), what="curation of the upload")
        marker = json.loads(store.get_bytes(curated_marker_key(video_id, config_hash)))
        assert marker["accepted"], marker

        hits = httpx.post(f"{search.url}/v1/search", headers=AUTH, timeout=60,
                          json={"text": instruction, "top_k": 3}).json()["hits"]
        assert hits and hits[0]["clip_id"] in marker["accepted"] and hits[0]["video_id"] == video_id
        thumb = httpx.get(f"{search.url}{hits[0]['thumbnail_url']}", headers=AUTH)
        assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
        clip = httpx.get(f"{curate.url}/v1/clips/{hits[0]['clip_id']}", headers=AUTH).json()
        assert clip["shard"].startswith(f"shards/{config_hash}/") and store.exists(clip["shard"])

        # the same event delivered again: nothing new is written or announced
        bus = KafkaBus(kafka_settings)
        seen: list[events.Envelope] = []
        watcher = bus.consumer([events.TOPIC_CLIPS_CURATED], f"watch-{uuid.uuid4().hex[:6]}", seen.append)
        watcher.drain(idle_polls=3, timeout_s=1.0)
        before = len([e for e in seen if e.clip_curated.video_id == video_id])
        objects_before = sorted((o.key, o.etag) for o in store.list("clips/"))
        again = events.new_event("ingest", events.VideoIngested(video_id=video_id), lineage=[video_id])
        bus.publish(events.TOPIC_VIDEOS_INGESTED, again, key=video_id)
        run_id = f"ev-{video_id[:24]}-{config_hash}"
        _wait(lambda: json.loads(store.get_bytes(f"runs/{run_id}/run.json"))["videos"][0]["state"] == "skipped",
              what="the redelivered event to be handled")
        watcher.drain(idle_polls=3, timeout_s=1.0)
        assert len([e for e in seen if e.clip_curated.video_id == video_id]) == before == len(marker["accepted"])
        assert sorted((o.key, o.etag) for o in store.list("clips/")) == objects_before
        watcher.close()

        # tokenize: train a tokenizer on Ray Train from the curated clips, activate it, every clip is
        # encoded once into S3 token shards and announced on Kafka; a redelivered clip changes nothing
        from worldloom.tokenize.app import build_app as tokenize_app
        from worldloom.tokenize.settings import TokenizeSettings

        tokenize = stack.enter_context(BackgroundServer(tokenize_app(TokenizeSettings(
            store=s3_settings, bus=kafka_settings, http=http, consumer_group=f"tok-{uuid.uuid4().hex[:6]}"))))
        tokenized: list[events.Envelope] = []
        tok_watch = bus.consumer([events.TOPIC_CLIPS_TOKENIZED], f"watch-{uuid.uuid4().hex[:6]}", tokenized.append)
        r = httpx.post(f"{tokenize.url}/v1/tokenizers", headers=AUTH, timeout=60, json={
            "name": "e2e", "clips": {"config_hash": config_hash}, "kind": "discrete", "resolution": 32, "frames": 5,
            "steps": 6, "batch": 2, "num_images": 1, "checkpoint_every": 3, "log_every": 2, "activate": True})
        assert r.status_code == 202, r.text
        tid = r.json()["tokenizer_id"]
        _wait(lambda: httpx.get(f"{tokenize.url}/v1/tokenizers/{tid}", headers=AUTH).json()["state"]
              in ("succeeded", "failed"), timeout_s=400, what="tokenizer training on Ray")
        rec = httpx.get(f"{tokenize.url}/v1/tokenizers/{tid}", headers=AUTH).json()
        assert rec["state"] == "succeeded" and rec["active"] and rec["percent"] == 100.0, rec
        assert rec["lineage"]["clip_filter"]["config_hash"] == config_hash
        _wait(lambda: all(store.exists(token_marker_key(tid, c)) for c in marker["accepted"]), what="backfill")
        clip_id = marker["accepted"][0]
        again = events.new_event("curate", events.ClipCurated(clip_id=clip_id, video_id=video_id), lineage=[clip_id])
        bus.publish(events.TOPIC_CLIPS_CURATED, again, key=clip_id)
        time.sleep(3)
        tok_watch.drain(idle_polls=3, timeout_s=1.0)
        mine = [e.clip_tokenized for e in tokenized if e.clip_tokenized.tokenizer_id == tid]
        assert sorted(e.clip_id for e in mine) == sorted(marker["accepted"])  # once each, redelivery included
        assert all(store.exists(store.key_from_uri(e.shard_uri)) and e.kind == "discrete" for e in mine)
        tok_watch.close()
        bus.close()
