"""Run an ASGI app with uvicorn in a background thread (embedded mode, benchmarks, end-to-end tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

import uvicorn
from fastapi import FastAPI


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
