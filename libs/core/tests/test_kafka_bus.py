"""KafkaBus against a real Apache Kafka broker: cross-process delivery, crash redelivery, DLQ."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from worldloom.core import events
from worldloom.core.bus import PermanentError
from worldloom.core.bus.kafka import KafkaBus

pytestmark = pytest.mark.integration
WORKER = Path(__file__).with_name("kafka_worker.py")


def _event(i: int) -> events.Envelope:
    return events.new_event("test", events.VideoIngested(video_id=f"{i:064x}"))


def _worker(kafka_settings, topic, group, out, expect, crash_after=0):
    cmd = [sys.executable, str(WORKER), "--bootstrap", kafka_settings.bootstrap_servers, "--topic", topic,
           "--group", group, "--out", str(out), "--expect", str(expect), "--crash-after", str(crash_after)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=150)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_event_from_one_process_is_consumed_by_another(kafka_settings, unique_topic, tmp_path):
    bus = KafkaBus(kafka_settings)
    sent = [_event(i) for i in range(20)]
    for env in sent:
        bus.publish(unique_topic, env, key=env.video_ingested.video_id, wait=False)
    bus.flush()
    proc = _worker(kafka_settings, unique_topic, "g-cross", tmp_path, expect=20)
    assert proc.returncode == 0, proc.stderr[-2000:]
    effects = {p.name: p.read_text() for p in (tmp_path / "effects").iterdir()}
    assert effects == {e.event_id: e.video_ingested.video_id for e in sent}
    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
    desc = admin.describe_topics([unique_topic])[0]
    assert len(desc["partitions"]) == kafka_settings.partitions  # created on demand, as configured
    admin.close()
    bus.close()


def test_crash_after_effect_before_commit_redelivers_and_effect_happens_once(
    kafka_settings, unique_topic, tmp_path
):
    bus = KafkaBus(kafka_settings)
    sent = [_event(i) for i in range(30)]
    for env in sent:
        bus.publish(unique_topic, env, key=env.video_ingested.video_id, wait=False)
    bus.flush()
    crashed = _worker(kafka_settings, unique_topic, "g-crash", tmp_path, expect=30, crash_after=10)
    assert crashed.returncode == 17, crashed.stderr[-2000:]
    before = _lines(tmp_path / "invocations.log")
    assert len(before) == 10
    resumed = _worker(kafka_settings, unique_topic, "g-crash", tmp_path, expect=30)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    calls = _lines(tmp_path / "invocations.log")
    writes = _lines(tmp_path / "effect_writes.log")
    assert sorted(writes) == sorted(e.event_id for e in sent)  # nothing lost, nothing doubled
    assert len(calls) > len(writes)  # the uncommitted events really were delivered again
    assert set(before) <= set(calls[10:])
    bus.close()


def test_poison_and_failing_messages_land_in_dlq_and_consumer_keeps_going(kafka_settings, unique_topic):
    bus = KafkaBus(kafka_settings)
    bus.publish_raw(unique_topic, b"\x08\x96\x01 definitely not an envelope", key="poison")
    bad = _event(1)
    bus.publish(unique_topic, bad, key="permanent")
    flaky = _event(2)
    bus.publish(unique_topic, flaky, key="flaky")
    good = _event(3)
    bus.publish(unique_topic, good, key="good")
    handled, attempts = [], {"flaky": 0}

    def handler(env):
        if env.event_id == bad.event_id:
            raise PermanentError("video_id refers to nothing in the store")
        if env.event_id == flaky.event_id:
            attempts["flaky"] += 1
            raise TimeoutError("downstream timed out")
        handled.append(env.event_id)

    consumer = bus.consumer([unique_topic], f"g-{uuid.uuid4().hex[:6]}", handler)
    deadline_polls = 40
    while good.event_id not in handled and deadline_polls:
        consumer.poll_once(0.5)
        deadline_polls -= 1
    consumer.close()
    assert handled == [good.event_id]
    assert attempts["flaky"] == kafka_settings.max_attempts

    raw = KafkaConsumer(
        events.dlq_topic(unique_topic), bootstrap_servers=kafka_settings.bootstrap_servers,
        auto_offset_reset="earliest", consumer_timeout_ms=5000, group_id=None,
    )
    letters = {}
    for rec in raw:
        d = events.DeadLetter.FromString(rec.value)
        letters[d.key] = d
        if len(letters) == 3:
            break
    raw.close()
    assert set(letters) == {"poison", "permanent", "flaky"}
    assert "not a protobuf" in letters["poison"].error or "no event_id" in letters["poison"].error
    assert letters["poison"].value == b"\x08\x96\x01 definitely not an envelope"
    assert letters["permanent"].error == "video_id refers to nothing in the store"
    assert letters["flaky"].error_type == "TimeoutError" and letters["flaky"].attempts == kafka_settings.max_attempts
    assert letters["flaky"].topic == unique_topic and letters["flaky"].failed_at.seconds > 0
    bus.close()


def test_readiness_reports_unreachable_broker():
    from worldloom.core.settings import BusSettings

    bus = KafkaBus(BusSettings(kind="kafka", bootstrap_servers="127.0.0.1:1"))
    assert bus.healthy() is False
