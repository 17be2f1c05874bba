"""The generate model server (KServe, ``python -m worldloom.generate``) as a child process on loopback ports.

    with GenerateServer(store_root, ["wm-ar", "wm-dit"], token="t") as server:
        httpx.get(f"{server.url}/v2/health/ready")

It serves world models from a local store (see :mod:`worldloom.testkit.models`) on the CPU with one
torch thread; ``env`` adds or overrides ``WORLDLOOM_GENERATE_*`` settings (e.g. limits). Start-up
failures raise :class:`~worldloom.testkit.process.ServerStartError` with the server's log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from worldloom.testkit.ports import LOOPBACK, free_port
from worldloom.testkit.process import ManagedProcess


class GenerateServer(ManagedProcess):
    name = "generate"
    stop_timeout = 15.0

    def __init__(self, store_root: Path, model_ids: Sequence[str], *, token: str, grpc: bool = False,
                 env: Mapping[str, str] | None = None, ready_timeout: float = 120.0) -> None:
        super().__init__(ready_timeout=ready_timeout)
        self.store_root, self.model_ids, self.token, self.grpc = Path(store_root), list(model_ids), token, grpc
        self.extra_env = dict(env or {})
        self.port = self.grpc_port = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def grpc_address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def prepare(self) -> None:
        self.port = free_port()
        self.grpc_port = free_port() if self.grpc else 0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "worldloom.generate"]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "WORLDLOOM_GENERATE_MODEL_IDS": ",".join(self.model_ids),
               "WORLDLOOM_GENERATE_HTTP__HOST": LOOPBACK, "WORLDLOOM_GENERATE_HTTP__PORT": str(self.port),
               "WORLDLOOM_GENERATE_HTTP__API_TOKENS": self.token, "WORLDLOOM_GENERATE_STORE__ROOT": str(self.store_root),
               "WORLDLOOM_GENERATE_DEVICE": "cpu", "WORLDLOOM_GENERATE_TORCH_THREADS": "1",
               "WORLDLOOM_GENERATE_PRELOAD_TEXT_EMBEDDER": "false", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        if self.grpc:
            env.update({"WORLDLOOM_GENERATE_GRPC__ENABLED": "true", "WORLDLOOM_GENERATE_GRPC__PORT": str(self.grpc_port)})
        env.update(self.extra_env)
        return env

    def is_ready(self) -> bool:
        return httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200
