"""An object store that does not answer is an outage, not bad input: S3 calls raise StoreUnavailable, the
service kit answers 503 with a stable code (nothing stored), and a consumer rewinds and retries the batch
instead of spending the message's attempts on the DLQ."""

from __future__ import annotations

import threading

from fastapi import APIRouter
from fastapi.testclient import TestClient

from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.service import create_app
from worldloom.core.settings import HttpSettings, ServiceSettings, StoreSettings
from worldloom.core.store import StoreUnavailable
from worldloom.core.store.s3 import S3Store
from worldloom.testkit.ports import free_port
from worldloom.testkit.process import wait_until

TOPIC = "videos.ingested"


def _dead_store() -> S3Store:
    """An S3 store on a port nothing listens on (created without touching the bucket)."""
    return S3Store(StoreSettings(kind="s3", endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b"),
                   create_bucket=False)


def test_every_s3_operation_says_the_store_is_unavailable() -> None:
    store = _dead_store()
    for name, call in (("stat", lambda: store.stat("k")), ("get", lambda: store.get_bytes("k")),
                       ("put", lambda: store.put_bytes("k", b"x")), ("list", lambda: list(store.list("k/"))),
                       ("delete", lambda: store.delete("k")), ("versioned", lambda: store.read_versioned("k")),
                       ("conditional", lambda: store.put_bytes_if("k", b"x", None))):
        try:
            call()
        except StoreUnavailable as exc:
            assert "did not answer" in str(exc), name
        else:
            raise AssertionError(f"{name} did not fail")
    assert not store.healthy()


def test_the_kit_answers_503_and_the_caller_may_retry() -> None:
    store = _dead_store()
    router = APIRouter(prefix="/v1")

    @router.get("/things/{key}")
    def thing(key: str) -> dict:
        return {"size": store.stat(key).size}

    app = create_app("kit", ServiceSettings(http=HttpSettings(api_tokens="t")), [router])
    r = TestClient(app).get("/v1/things/a", headers={"Authorization": "Bearer t"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
    assert "retry later" in r.json()["error"]["message"] and r.headers["retry-after"]


def test_a_consumer_retries_an_outage_instead_of_dead_lettering() -> None:
    bus = InProcessBus(retry_backoff_s=0, batch_retry_backoff_s=0.02)  # max_attempts 3 by default
    bus.publish(TOPIC, events.new_event("t", events.VideoIngested(video_id="a" * 64)), key="k")
    calls: list[int] = []

    def handler(env: events.Envelope) -> None:
        calls.append(1)
        if len(calls) <= 5:  # more failures than the handler's attempts: an outage outlasts them
            raise StoreUnavailable("the object store did not answer (test)")

    consumer = bus.consumer([TOPIC], "g", handler)
    stop = threading.Event()
    t = threading.Thread(target=consumer.run, args=(stop, 0.02))
    t.start()
    try:
        assert wait_until(lambda: len(calls) >= 6, 10)
    finally:
        stop.set()
        t.join(5)
    assert bus.messages(events.dlq_topic(TOPIC)) == []  # nothing dead-lettered
    assert len(calls) == 6  # handled once it came back, and only then committed
