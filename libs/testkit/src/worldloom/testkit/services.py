"""A Worldloom service (``python -m worldloom.<service>``) as a child process on a free loopback port.

    curate = ServiceProcess("curate", {"BUS__KIND": "kafka", ...}, token="t").start()
    curate.kill(); curate.start()   # a crash and a restart, same port

``settings`` are the service's own variables without the ``WORLDLOOM_<SERVICE>_`` prefix. The child gets
exactly those of its prefix (the parent's are dropped: an unknown one stops start-up, and a stray one
would silently change what runs); everything else in the environment is inherited. Ready once
``ready_path`` answers 200.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import httpx

from worldloom.testkit.ports import LOOPBACK, free_port
from worldloom.testkit.process import ManagedProcess


class ServiceProcess(ManagedProcess):
    stop_timeout = 15.0
    ready_path = "/readyz"

    def __init__(self, service: str, settings: Mapping[str, str] | None = None, *, token: str,
                 name: str | None = None, workdir: str | os.PathLike[str] | None = None,
                 ready_timeout: float = 120.0) -> None:
        super().__init__(workdir=workdir, ready_timeout=ready_timeout)
        self.service, self.token = service, token
        self.name = name or service
        self.settings = dict(settings or {})
        self.port = 0

    @property
    def prefix(self) -> str:
        return f"WORLDLOOM_{self.service.upper()}_"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def prepare(self) -> None:
        if not self.resuming:  # a restarted service keeps its address
            self.port = free_port()

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"worldloom.{self.service}"]

    def service_settings(self) -> dict[str, str]:
        """The settings the child runs with (unprefixed); subclasses add their own defaults here."""
        return {"HTTP__HOST": LOOPBACK, "HTTP__PORT": str(self.port), "HTTP__API_TOKENS": self.token, **self.settings}

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(self.prefix)}
        env.update({self.prefix + k: v for k, v in self.service_settings().items()})
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def is_ready(self) -> bool:
        return httpx.get(f"{self.url}{self.ready_path}", timeout=2).status_code == 200
