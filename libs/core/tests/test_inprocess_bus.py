import logging
import threading
import time

from worldloom.core import events
from worldloom.core.bus import PermanentError
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.testkit.process import wait_until

TOPIC = "videos.ingested"


def _event(i: int) -> events.Envelope:
    return events.new_event("test", events.VideoIngested(video_id=f"{i:064x}"))


def _ids(envs):
    return [e.video_ingested.video_id for e in envs]


def test_each_group_sees_every_message_once():
    bus = InProcessBus(partitions=3)
    for i in range(10):
        bus.publish(TOPIC, _event(i), key=f"k{i}")
    seen_a, seen_b = [], []
    a = bus.consumer([TOPIC], "a", seen_a.append)
    b = bus.consumer([TOPIC], "b", seen_b.append)
    assert a.drain(idle_polls=1, timeout_s=0.01) == 10
    assert b.drain(idle_polls=1, timeout_s=0.01) == 10
    assert sorted(_ids(seen_a)) == sorted(_ids(seen_b)) == [f"{i:064x}" for i in range(10)]
    assert a.drain(idle_polls=1, timeout_s=0.01) == 0  # committed: nothing again


def test_same_key_keeps_order():
    bus = InProcessBus(partitions=4)
    for i in range(20):
        bus.publish(TOPIC, _event(i), key="same")
    seen = []
    bus.consumer([TOPIC], "g", seen.append).drain(idle_polls=1, timeout_s=0.01)
    assert _ids(seen) == [f"{i:064x}" for i in range(20)]


def test_uncommitted_messages_are_redelivered_after_close():
    bus = InProcessBus()
    for i in range(3):
        bus.publish(TOPIC, _event(i))
    c1 = bus.consumer([TOPIC], "g", lambda e: None)
    assert len(c1._fetch(0.01)) == 3  # fetched, handler "crashed" before commit
    c1.close()
    seen = []
    bus.consumer([TOPIC], "g", seen.append).drain(idle_polls=1, timeout_s=0.01)
    assert len(seen) == 3


def test_transient_failure_is_retried_then_succeeds():
    bus = InProcessBus(retry_backoff_s=0)
    bus.publish(TOPIC, _event(1))
    calls = []

    def flaky(env):
        calls.append(env.event_id)
        if len(calls) < 3:
            raise RuntimeError("store briefly down")

    bus.consumer([TOPIC], "g", flaky).drain(idle_polls=1, timeout_s=0.01)
    assert len(calls) == 3
    assert bus.messages(events.dlq_topic(TOPIC)) == []


def test_poison_and_failing_messages_go_to_dlq_with_reason_and_consumer_continues():
    bus = InProcessBus(retry_backoff_s=0, max_attempts=2)
    bus.publish_raw(TOPIC, b"not protobuf at all \xff", key="bad")
    bus.publish(TOPIC, _event(1), key="perm")
    bus.publish(TOPIC, _event(2), key="flaky")
    bus.publish(TOPIC, _event(3), key="good")
    handled = []

    def handler(env):
        vid = env.video_ingested.video_id
        if vid == f"{1:064x}":
            raise PermanentError("clip references a missing video")
        if vid == f"{2:064x}":
            raise RuntimeError("always fails")
        handled.append(vid)

    bus.consumer([TOPIC], "g", handler).drain(idle_polls=1, timeout_s=0.01)
    assert handled == [f"{3:064x}"]
    letters = [events.DeadLetter.FromString(m.value) for m in bus.messages(events.dlq_topic(TOPIC))]
    by_key = {d.key: d for d in letters}
    assert set(by_key) == {"bad", "perm", "flaky"}
    assert "not a protobuf" in by_key["bad"].error and by_key["bad"].attempts == 0
    assert by_key["perm"].error == "clip references a missing video" and by_key["perm"].attempts == 1
    assert by_key["flaky"].error_type == "RuntimeError" and by_key["flaky"].attempts == 2
    assert by_key["bad"].value == b"not protobuf at all \xff" and by_key["bad"].consumer_group == "g"


def test_run_loop_consumes_in_background_until_stopped():
    bus = InProcessBus()
    got = threading.Event()
    consumer = bus.consumer([TOPIC], "g", lambda env: got.set())
    stop = threading.Event()
    t = threading.Thread(target=consumer.run, args=(stop, 0.05))
    t.start()
    bus.publish(TOPIC, _event(7))
    assert got.wait(5)
    stop.set()
    t.join(5)
    assert not t.is_alive()


def test_failed_dead_letter_write_rewinds_and_nothing_is_lost(caplog):
    """Issue 15/1: [garbage, ev1, ev2], the DLQ write fails once, then ev3 -> all of ev1..ev3, once each."""
    bus = InProcessBus(retry_backoff_s=0, batch_retry_backoff_s=0.05)
    bus.publish_raw(TOPIC, b"garbage", key="poison")
    bus.publish(TOPIC, _event(1), key="k")
    bus.publish(TOPIC, _event(2), key="k")
    real_publish, failed = bus.publish_raw, []

    def dlq_down_once(topic, value, key=None, *, wait=True):
        if topic == events.dlq_topic(TOPIC) and not failed:
            failed.append(topic)
            raise ConnectionError("dead-letter topic unreachable")
        real_publish(topic, value, key, wait=wait)

    bus.publish_raw = dlq_down_once
    handled = []
    consumer = bus.consumer([TOPIC], "g", handled.append)
    stop = threading.Event()
    t = threading.Thread(target=consumer.run, args=(stop, 0.05))
    t.start()
    try:
        assert wait_until(lambda: failed, 5)
        bus.publish(TOPIC, _event(3), key="k")
        wait_until(lambda: len(handled) >= 3, 5)
    finally:
        stop.set()
        t.join(5)
    assert _ids(handled) == [f"{i:064x}" for i in (1, 2, 3)]  # nothing lost, nothing doubled, in order
    letters = [events.DeadLetter.FromString(m.value) for m in bus.messages(events.dlq_topic(TOPIC))]
    assert [(d.key, d.value, d.offset) for d in letters] == [("poison", b"garbage", 0)]
    assert "not a protobuf" in letters[0].error or "no event_id" in letters[0].error  # the reason travels
    failure = next(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "worldloom.bus")
    assert f"topic={TOPIC} partition=0 offset=0" in failure and "dead-letter topic unreachable" in failure


def test_a_failing_batch_is_retried_with_growing_capped_backoff():
    """An outage must not spin the consumer hot: the pauses double up to the cap, and success resets them."""
    bus = InProcessBus(retry_backoff_s=0, batch_retry_backoff_s=0.05, batch_retry_backoff_max_s=0.2)
    bus.publish_raw(TOPIC, b"garbage", key="poison")
    real_publish, attempts = bus.publish_raw, []

    def dlq_down(topic, value, key=None, *, wait=True):
        if topic == events.dlq_topic(TOPIC) and len(attempts) < 6:
            attempts.append(time.monotonic())
            raise ConnectionError("dead-letter topic unreachable")
        real_publish(topic, value, key, wait=wait)

    bus.publish_raw = dlq_down
    consumer = bus.consumer([TOPIC], "g", lambda env: None)
    stop = threading.Event()
    t = threading.Thread(target=consumer.run, args=(stop, 0.01))
    t.start()
    try:
        assert wait_until(lambda: bus.messages(events.dlq_topic(TOPIC)), 5)
    finally:
        stop.set()
        t.join(5)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(gaps) == 5
    for gap, want in zip(gaps, (0.05, 0.1, 0.2, 0.2, 0.2)):
        assert want * 0.9 <= gap < want + 0.15, gaps
    assert len(bus.messages(events.dlq_topic(TOPIC))) == 1


def test_stop_mid_batch_commits_what_was_handled_and_redelivers_the_rest():
    """A shutdown during a long batch does not wait for the whole batch, and loses nothing."""
    bus = InProcessBus()
    for i in range(10):
        bus.publish(TOPIC, _event(i), key="k")
    stop, handled = threading.Event(), []

    def handler(env):
        handled.append(env.video_ingested.video_id)
        if len(handled) == 4:
            stop.set()

    consumer = bus.consumer([TOPIC], "g", handler)
    assert consumer.poll_once(0.01, stop=stop) == 4
    consumer.close()
    rest = []
    assert bus.consumer([TOPIC], "g", rest.append).drain(idle_polls=1, timeout_s=0.01) == 6
    assert handled + _ids(rest) == [f"{i:064x}" for i in range(10)]


def test_handlers_run_off_the_consumer_thread_and_batches_are_bounded():
    """The consumer thread must stay free to keep its group membership (Kafka) while a handler works."""
    bus = InProcessBus(max_poll_records=3)
    for i in range(7):
        bus.publish(TOPIC, _event(i), key="k")
    threads = set()
    consumer = bus.consumer([TOPIC], "g", lambda env: threads.add(threading.current_thread()))
    assert [consumer.poll_once(0.01) for _ in range(4)] == [3, 3, 1, 0]
    assert threading.current_thread() not in threads and len(threads) == 1
    consumer.close()
