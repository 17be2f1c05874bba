"""Milvus Lite in server mode (`milvus-lite server`), so several processes can share one vector index."""

from __future__ import annotations

import os
import sys

from worldloom.testkit.ports import LOOPBACK, free_port, port_open
from worldloom.testkit.process import ManagedProcess, find_executable


class MilvusServer(ManagedProcess):
    """A Milvus Lite gRPC server; `uri` ("http://127.0.0.1:PORT") goes to `pymilvus.MilvusClient(uri=...)`."""

    name = "milvus"
    # SIGTERM ends it at once (only Ctrl+C/SIGINT drains); fine, the data is throwaway.
    stop_timeout = 5.0

    def __init__(self, *, port: int | None = None, workdir: str | os.PathLike[str] | None = None,
                 ready_timeout: float = 60.0) -> None:
        super().__init__(workdir=workdir, ready_timeout=ready_timeout)
        self._want_port = port
        self.port = 0

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def prepare(self) -> None:
        if not self.resuming:  # after halt/kill: the same port and data
            self.port = self._want_port or free_port()

    def command(self) -> list[str]:
        assert self.workdir is not None
        try:
            base = [find_executable("milvus-lite")]
        except FileNotFoundError:
            base = [sys.executable, "-m", "milvus_lite"]
        return [*base, "server", "--data-dir", str(self.workdir / "data"), "--host", LOOPBACK, "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def is_ready(self) -> bool:
        if not port_open(self.port):
            return False
        from pymilvus import MilvusClient

        from worldloom.core.vectors import GRPC_OPTIONS

        # a dedicated channel with the keepalive the server permits: a shared default one (10 s keepalive)
        # would be reused by later clients in this process and trip the server's too_many_pings GOAWAY
        client = MilvusClient(uri=self.uri, timeout=5, dedicated=True, grpc_options=dict(GRPC_OPTIONS))
        try:
            client.list_collections()
        finally:
            client.close()
        return True
