"""KafkaBus against a real Apache Kafka broker: cross-process delivery, crash redelivery, DLQ."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.admin import ConfigResource, KafkaAdminClient
from prometheus_client import REGISTRY

from worldloom.core import events
from worldloom.core.bus import PermanentError
from worldloom.core.bus.kafka import KafkaBus
from worldloom.testkit.process import wait_until

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


def _topics_with_limits(bootstrap: str, limits: dict[str, int | None]) -> None:
    """One-partition topics; a number is the broker's max.message.bytes, so bigger writes are refused."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({t: {"num_partitions": 1, "replication_factor": 1,
                                 "configs": {"max.message.bytes": str(n)} if n else {}}
                             for t, n in limits.items()}, wait_for_metadata=True)
    finally:
        admin.close()


def _set_limit(bootstrap: str, topic: str, max_bytes: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_configs([ConfigResource("TOPIC", topic, {"max.message.bytes": str(max_bytes)})])
    finally:
        admin.close()


def _bus_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "worldloom.bus"]


def _dead_letters(bootstrap: str, topic: str) -> list[events.DeadLetter]:
    raw = KafkaConsumer(events.dlq_topic(topic), bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                        consumer_timeout_ms=3000, group_id=None)
    try:
        return [events.DeadLetter.FromString(r.value) for r in raw]
    finally:
        raw.close()


def test_dead_letter_write_refused_by_the_broker_rewinds_and_nothing_is_lost(
    kafka_settings, unique_topic, caplog
):
    """Issue 15/1 on real Kafka: the DLQ refuses the letter at first; ev1..ev3 are each handled once."""
    settings = kafka_settings.model_copy(update={"batch_retry_backoff_s": 0.2, "batch_retry_backoff_max_s": 1.0})
    dlq = events.dlq_topic(unique_topic)
    _topics_with_limits(settings.bootstrap_servers, {unique_topic: None, dlq: 64})  # no letter fits in 64 B
    bus = KafkaBus(settings)
    bus.publish_raw(unique_topic, b"garbage", key="poison")
    sent = [_event(1), _event(2)]
    for env in sent:
        bus.publish(unique_topic, env, key="k")
    handled: list[str] = []
    consumer = bus.consumer([unique_topic], f"g-{uuid.uuid4().hex[:6]}", lambda env: handled.append(env.event_id))
    stop = threading.Event()
    t = threading.Thread(target=consumer.run, args=(stop, 0.2))
    t.start()
    try:
        assert wait_until(lambda: _bus_errors(caplog), 30)
        sent.append(_event(3))
        bus.publish(unique_topic, sent[-1], key="k")
        time.sleep(1.0)  # the consumer polls (and retries) while the DLQ still refuses the letter
        _set_limit(settings.bootstrap_servers, dlq, 1_048_588)
        wait_until(lambda: len(handled) >= 3, 20)
    finally:
        stop.set()
        t.join(15)
        consumer.close()
    assert handled == [e.event_id for e in sent]  # nothing lost, nothing doubled, in order
    letters = _dead_letters(settings.bootstrap_servers, unique_topic)
    assert [(d.key, d.value, d.offset) for d in letters] == [("poison", b"garbage", 0)]
    assert letters[0].error and letters[0].error_type == "EventDecodeError"  # the reason travels with it
    assert f"topic={unique_topic} partition=0 offset=0" in _bus_errors(caplog)[0]
    bus.close()


def test_flush_raises_for_every_record_the_broker_refused(kafka_settings, unique_topic):
    """Issue 15/2: publish(wait=False) + flush() must not lose a record silently."""
    _topics_with_limits(kafka_settings.bootstrap_servers, {unique_topic: 256})
    bus = KafkaBus(kafka_settings)
    bus.publish_raw(unique_topic, b"fits", key="small", wait=False)
    bus.flush(30)  # acknowledged: nothing to report
    bus.publish_raw(unique_topic, b"x" * 2000, key="big-1", wait=False)
    with pytest.raises(Exception, match=unique_topic) as caught:
        bus.flush(30)
    assert [(f.topic, f.key) for f in caught.value.failures] == [(unique_topic, "big-1")]
    bus.flush(30)  # each failure is reported once
    bus.publish_raw(unique_topic, b"y" * 2000, key="big-2", wait=False)  # one batch, split and retried
    bus.publish_raw(unique_topic, b"z" * 2000, key="big-3", wait=False)
    with pytest.raises(Exception, match="2 of 2 records") as caught:
        bus.flush(30)
    assert sorted(f.key for f in caught.value.failures) == ["big-2", "big-3"]
    bus.publish_raw(unique_topic, b"fits too", key="small", wait=True)  # the producer still works

    # two units of work in two threads share the producer: each flush answers for its own thread's records
    published, main_flushed = threading.Event(), threading.Event()
    outcome: dict[str, BaseException | None] = {}

    def other_unit() -> None:
        bus.publish_raw(unique_topic, b"z" * 2000, key="other", wait=False)
        published.set()
        main_flushed.wait(30)
        try:
            bus.flush(30)
            outcome["other"] = None
        except Exception as exc:  # the test inspects it
            outcome["other"] = exc

    t = threading.Thread(target=other_unit)
    t.start()
    assert published.wait(10)
    time.sleep(1.0)  # the broker refuses the other unit's record before this one is sent
    bus.publish_raw(unique_topic, b"mine", key="mine", wait=False)
    bus.flush(30)  # the main thread's record was acknowledged: its flush succeeds, reporting nothing of others
    main_flushed.set()
    t.join(30)
    assert [f.key for f in outcome["other"].failures] == ["other"]  # and the other unit still learns of its loss
    bus.close()


def test_slow_handler_over_a_short_poll_interval_handles_each_record_once_without_rebalance(
    kafka_settings, unique_topic
):
    """Issue 15/8: handling takes far longer than max_poll_interval_ms (one record alone does too)."""
    settings = kafka_settings.model_copy(update={"max_poll_interval_ms": 2000})
    bus = KafkaBus(settings)
    sent = [_event(i) for i in range(40)]
    for env in sent:
        bus.publish(unique_topic, env, key=env.video_ingested.video_id, wait=False)
    bus.flush(30)
    group = f"g-slow-{uuid.uuid4().hex[:6]}"
    calls: list[str] = []

    def slow(env: events.Envelope) -> None:
        calls.append(env.event_id)
        time.sleep(3.0 if len(calls) == 1 else 0.2)  # 3 s + 39 x 0.2 s against a 2 s poll interval

    consumer = bus.consumer([unique_topic], group, slow)
    stop = threading.Event()
    t = threading.Thread(target=consumer.run, args=(stop, 0.5))
    t.start()
    try:
        wait_until(lambda: len(set(calls)) >= len(sent), 40)
        time.sleep(3.0)  # longer than the poll interval: a redelivery would show up now
    finally:
        stop.set()
        t.join(15)
        assignments = REGISTRY.get_sample_value("worldloom_bus_assignments_total", {"group": group})
        consumer.close()
    assert sorted(calls) == sorted(e.event_id for e in sent)  # all handled, none twice
    assert assignments == 1  # the group never rebalanced
    after = bus.consumer([unique_topic], group, lambda env: None)
    assert after.drain(idle_polls=2, timeout_s=1.0) == 0  # everything was committed
    after.close()
    bus.close()


def test_member_joining_mid_batch_takes_over_without_losing_or_redoing_the_batch(kafka_settings, unique_topic):
    """A rebalance during a slow batch stops it after the current message, commits what was done, and
    leaves the rest to whichever member owns each partition now."""
    bus = KafkaBus(kafka_settings.model_copy(update={"max_poll_interval_ms": 4000}))
    sent = [_event(i) for i in range(30)]
    for env in sent:
        bus.publish(unique_topic, env, key=env.video_ingested.video_id, wait=False)
    bus.flush(30)
    group = f"g-join-{uuid.uuid4().hex[:6]}"
    calls: dict[str, list[str]] = {"a": [], "b": []}

    def slow(name: str) -> Callable[[events.Envelope], None]:
        def handle(env: events.Envelope) -> None:
            calls[name].append(env.event_id)
            time.sleep(0.3)
        return handle

    stop, members, threads = threading.Event(), [], []
    try:
        for name in ("a", "b"):
            members.append(bus.consumer([unique_topic], group, slow(name)))
            threads.append(threading.Thread(target=members[-1].run, args=(stop, 0.5)))
            threads[-1].start()
            assert wait_until(lambda: len(calls["a"]) >= 5, 30)  # b joins while a is mid-batch
        wait_until(lambda: len(set(calls["a"] + calls["b"])) >= len(sent), 40)
        time.sleep(2.0)  # a redelivery would show up now
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        for m in members:
            m.close()
    handled = calls["a"] + calls["b"]
    assert set(handled) == {e.event_id for e in sent}  # nothing lost
    assert calls["b"], "the new member got no share"
    # redone at most: the message each member had in flight, and what finished since the last
    # progress commit (0.1 s, against 0.3 s per message) -- never the rest of the batch
    assert len(handled) - len(sent) <= 3, sorted(handled)
    bus.close()


def test_session_timeout_is_applied_with_a_heartbeat_within_it(kafka_settings, unique_topic):
    """How long a crashed member keeps its partitions is a setting (the faults suite restarts members)."""
    bus = KafkaBus(kafka_settings.model_copy(update={"session_timeout_ms": 6000}))
    consumer = bus.consumer([unique_topic], f"g-{uuid.uuid4().hex[:6]}", lambda env: None)
    try:
        config = consumer._consumer.config
        assert config["session_timeout_ms"] == 6000 and config["heartbeat_interval_ms"] == 2000
        consumer.poll_once(0.5)  # the broker accepts the session: the member joins
    finally:
        consumer.close()
        bus.close()
