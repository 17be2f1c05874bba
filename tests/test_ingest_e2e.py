"""Upload -> S3 -> Kafka with every real part: uvicorn, SeaweedFS S3, Apache Kafka, the worldloom CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from worldloom.core import events
from worldloom.core.bus.kafka import KafkaBus
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings
from worldloom.core.store.s3 import S3Store
from worldloom.ingest.app import build_app
from worldloom.ingest.settings import IngestSettings
from worldloom.video import synthetic

pytestmark = pytest.mark.integration
TOKEN = "e2e-token"


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORLDLOOM_CLI_INGEST_URL": url, "WORLDLOOM_CLI_TOKEN": TOKEN, "COLUMNS": "200"}
    exe = Path(sys.executable).with_name("worldloom")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_upload_through_s3_and_kafka(s3_settings, kafka_settings, shared_data, tmp_path):
    settings = IngestSettings(store=s3_settings, bus=kafka_settings, http=HttpSettings(api_tokens=TOKEN))
    videos = shared_data / "video/pyscenedetect"
    files = [videos / "counter.mp4", videos / "delayed_start.mp4"]
    bad = synthetic.write_random_bytes(tmp_path / "broken.mp4", 30_000)
    with BackgroundServer(build_app(settings)) as server:
        assert httpx.get(f"{server.url}/readyz").json() == {"ready": True, "checks": {"store": True, "bus": True}}
        ok = _cli(server.url, "ingest", *map(str, files), "--json", "--attr", "site=lab")
        assert ok.returncode == 0, ok.stderr
        results = [json.loads(line) for line in ok.stdout.splitlines()]
        assert [r["result"] for r in results] == ["new", "new"]
        again = _cli(server.url, "ingest", str(files[0]), "--json")
        assert json.loads(again.stdout)["result"] == "duplicate"
        rejected = _cli(server.url, "ingest", str(bad), "--json")
        assert rejected.returncode == 1 and "not_a_video" in rejected.stdout
        unauth = subprocess.run(
            [str(Path(sys.executable).with_name("worldloom")), "ingest", str(files[0])],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "WORLDLOOM_CLI_INGEST_URL": server.url, "WORLDLOOM_CLI_TOKEN": "wrong"},
        )
        assert unauth.returncode == 1 and "unauthorized" in unauth.stdout + unauth.stderr

    store = S3Store(s3_settings)
    by_id = {hashlib.sha256(f.read_bytes()).hexdigest(): f for f in files}
    for vid, f in by_id.items():
        assert store.get_bytes(f"raw/{vid}/video.mp4") == f.read_bytes()
        meta = json.loads(store.get_bytes(f"raw/{vid}/meta.json"))
        assert meta["status"] == "ingested" and meta["attributes"] == {"site": "lab"}
    assert len([o for o in store.list("raw/")]) == 4  # two videos, two sidecars: nothing from the bad one

    seen: list[events.Envelope] = []
    bus = KafkaBus(kafka_settings)
    consumer = bus.consumer([events.TOPIC_VIDEOS_INGESTED], f"e2e-{uuid.uuid4().hex[:6]}", seen.append)
    for _ in range(30):
        consumer.poll_once(0.5)
        if len({e.video_ingested.video_id for e in seen} & set(by_id)) == 2:
            break
    consumer.close()
    mine = [e for e in seen if e.video_ingested.video_id in by_id]
    assert len(mine) == 2  # one event per video, none for the duplicate or the rejected file
    for e in mine:
        assert e.producer == "ingest" and store.key_from_uri(e.video_ingested.uri).startswith("raw/")
        assert e.video_ingested.info.frame_count > 0
    bus.close()


def test_cli_records_gymnasium_episodes_with_actions(s3_settings, kafka_settings):
    from safetensors.numpy import load

    settings = IngestSettings(store=s3_settings, bus=kafka_settings, http=HttpSettings(api_tokens=TOKEN))
    with BackgroundServer(build_app(settings)) as server:
        r = _cli(server.url, "ingest", "--env", "CartPole-v1", "--episodes", "2", "--max-steps", "30", "--seed", "7",
                 "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        job = json.loads(r.stdout)
        again = _cli(server.url, "ingest", "--env", "CartPole-v1", "--episodes", "2", "--max-steps", "30", "--seed", "7",
                     "--json")
        assert [e["duplicate"] for e in json.loads(again.stdout)["episodes"]] == [True, True]
        bad = _cli(server.url, "ingest", "--env", "NoSuchEnv-v0")
        assert bad.returncode == 2 and "NoSuchEnv" in bad.stdout + bad.stderr
    assert job["state"] == "succeeded" and job["percent"] == 100 and len(job["video_ids"]) == 2
    store = S3Store(s3_settings)
    for vid, ep in zip(job["video_ids"], job["episodes"], strict=True):
        meta = json.loads(store.get_bytes(f"raw/{vid}/meta.json"))
        assert meta["source"] == "gymnasium" and meta["attributes"]["env"] == "CartPole-v1"
        arrays = load(store.get_bytes(store.key_from_uri(meta["attributes"]["actions_uri"])))
        assert arrays["actions"].shape[0] == ep["steps"] and meta["info"]["frame_count"] == ep["steps"] + 1
