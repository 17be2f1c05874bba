"""Work beside a service's requests: start-up chores and event consumers on daemon threads for the life of
the app, and an ASGI app with uvicorn in a background thread (embedded mode, benchmarks, end-to-end tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

if TYPE_CHECKING:
    from worldloom.core.bus import Bus
    from worldloom.core.bus.base import Handler


@contextmanager
def in_background(work: Callable[[], object], name: str, join_s: float = 10.0) -> Iterator[None]:
    """Runs ``work`` on a daemon thread while the block runs: a service's start-up chores (resuming what a
    crash or an outage left unannounced) must not hold up its readiness."""
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(join_s)


@contextmanager
def consuming(bus: Bus, topics: Sequence[str], group: str, handler: Handler, name: str,
              enabled: bool = True, join_s: float = 10.0) -> Iterator[None]:
    """Consumes ``topics`` in ``group`` on a daemon thread while the block runs (a service's lifespan); on exit
    the poll loop stops after its batch (commits what finished) and the consumer leaves its group."""
    if not enabled:
        yield
        return
    stop = threading.Event()
    consumer = bus.consumer(topics, group, handler)
    thread = threading.Thread(target=consumer.run, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(join_s)
        consumer.close()


class BackgroundServer:
    """`with BackgroundServer(app) as s: httpx.get(s.url + "/healthz")` — binds 127.0.0.1 on a free port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = ""

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start (port in use?)")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(10)
