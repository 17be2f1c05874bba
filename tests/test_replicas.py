"""Replicas do not double work (issue 15 defect 7): real processes race on the same S3 store (SeaweedFS),
Kafka and Milvus, and the effects are counted: one stored video and one videos.ingested for the same bytes
uploaded at once, one curation (one clips.curated per accepted clip) for one video curated at once, one
dataset version per save of one name at once."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from worldloom.core import events

pytestmark = pytest.mark.integration
WORKER = Path(__file__).with_name("replica_worker.py")


def _race(kind: str, args: list[dict[str, Any]], go: Path, timeout_s: float = 600) -> list[dict[str, Any]]:
    """Starts one worker per args, waits until every one is ready, fires them at once; their JSON results."""
    procs = [subprocess.Popen([sys.executable, str(WORKER), kind, json.dumps({**a, "go": str(go)})],
                              stdout=subprocess.PIPE, text=True) for a in args]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        outs = [p.communicate(timeout=timeout_s)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def _payloads(s3_settings, kafka_settings) -> tuple[dict[str, Any], dict[str, Any]]:
    from worldloom.core.jobs import store_settings_payload

    return store_settings_payload(s3_settings), kafka_settings.model_dump(mode="json")


class _Topic:
    """Messages appended to a topic after this point (the session's broker is shared by many tests)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition

        from worldloom.core.bus.kafka import KafkaBus
        from worldloom.core.settings import BusSettings

        bus = KafkaBus(BusSettings(kind="kafka", bootstrap_servers=bootstrap))
        bus.ensure_topics([topic])
        bus.close()
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, consumer_timeout_ms=5000)
        parts = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or {0}]
        self.consumer.assign(parts)
        for tp, offset in self.consumer.end_offsets(parts).items():
            self.consumer.seek(tp, offset)

    def read(self) -> list[events.Envelope]:
        out = [events.decode(m.value) for m in self.consumer]
        self.consumer.close()
        return out


def test_two_replicas_uploading_the_same_bytes_store_and_emit_once(s3_settings, kafka_settings, shared_data, tmp_path):
    from worldloom.core.store.factory import make_store

    store, bus = _payloads(s3_settings, kafka_settings)
    topic = _Topic(kafka_settings.bootstrap_servers, events.TOPIC_VIDEOS_INGESTED)
    video = shared_data / "video/sintel/sintel_clip_10s.mp4"
    results = _race("ingest", [{"store": store, "bus": bus, "file": str(video)}] * 2, tmp_path / "go")
    sent = topic.read()
    print("ingest race:", results, f"{len(sent)} videos.ingested message(s)")
    assert sorted(r["duplicate"] for r in results) == [False, True], results
    assert len(sent) == 1
    s3 = make_store(s3_settings)
    assert [o.key.rsplit("/", 1)[1] for o in s3.list("raw/")] == ["meta.json", "video.mp4"]  # no claim left


def test_two_replicas_curating_the_same_video_curate_it_once(s3_settings, kafka_settings, milvus_uri, shared_data,
                                                             tmp_path):
    from worldloom.core.bus.inprocess import InProcessBus
    from worldloom.core.catalog import curated_marker_key
    from worldloom.core.store.factory import make_store
    from worldloom.video.ingest import IngestService
    from worldloom.video.limits import VideoLimits

    s3 = make_store(s3_settings)
    vid = IngestService(s3, InProcessBus(), VideoLimits()).ingest_file(
        shared_data / "bridge/videos/train/1432/rgb.mp4", "rgb.mp4", attributes={"dataset": "bridge"}).video.video_id
    store, bus = _payloads(s3_settings, kafka_settings)
    topic = _Topic(kafka_settings.bootstrap_servers, events.TOPIC_CLIPS_CURATED)
    args = [{"store": store, "bus": bus, "milvus": milvus_uri, "video_id": vid, "run_id": f"race-{i}"} for i in range(2)]
    results = _race("curate", args, tmp_path / "go")
    sent = [e for e in topic.read() if e.clip_curated.video_id == vid]
    marker = json.loads(s3.get_bytes(curated_marker_key(vid, results[0]["config_hash"])))
    print("curate race:", [r["state"] for r in results], f"{len(sent)} clips.curated for {len(marker['accepted'])} "
          "accepted clips")
    assert sorted(r["state"] for r in results) == ["done", "skipped"], results
    assert marker["accepted"] and sorted(e.clip_curated.clip_id for e in sent) == sorted(marker["accepted"])


def test_replicas_saving_one_dataset_name_each_get_a_version(s3_settings, kafka_settings, tmp_path):
    from worldloom.core.catalog import ClipRecord, clip_meta_key, latest_dataset_versions, read_dataset
    from worldloom.core.store.factory import make_store

    s3 = make_store(s3_settings)
    clip_ids = [uuid.uuid4().hex for _ in range(3)]
    for cid in clip_ids:
        s3.put_record(clip_meta_key(cid), ClipRecord(
            clip_id=cid, video_id="v" * 64, source="race", status="accepted", start_frame=0, end_frame=24,
            start_s=0.0, end_s=1.0, duration_s=1.0, fps=24.0, width=64, height=64, config_hash="cfg",
            created_at=datetime.now(timezone.utc)))
    store, bus = _payloads(s3_settings, kafka_settings)
    topic = _Topic(kafka_settings.bootstrap_servers, events.TOPIC_DATASETS_CREATED)
    name = f"race-{uuid.uuid4().hex[:8]}"
    args = [{"store": store, "bus": bus, "milvus": str(tmp_path / f"v{i}.db"), "name": name, "clip_ids": clip_ids}
            for i in range(3)]
    results = _race("dataset", args, tmp_path / "go")
    sent = [e.dataset_created for e in topic.read() if e.dataset_created.name == name]
    print("dataset race:", sorted(r["version"] for r in results), f"{len(sent)} datasets.created",
          f"{len(list(s3.list(f'datasets/{name}/')))} manifests")
    assert sorted(r["version"] for r in results) == [1, 2, 3]
    assert latest_dataset_versions(s3, name) == {name: 3}
    assert sorted(e.version for e in sent) == [1, 2, 3]
    assert all(read_dataset(s3, name, v).clip_ids == clip_ids for v in (1, 2, 3))
