import threading

from worldloom.core import events
from worldloom.core.bus import PermanentError
from worldloom.core.bus.inprocess import InProcessBus

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
