"""The generate model server (KServe, ``python -m worldloom.generate``) as a child process on loopback ports.

    with GenerateServer(store_root, ["wm-ar", "wm-dit"], token="t") as server:
        httpx.get(f"{server.url}/v2/health/ready")

It serves world models from a local store (see :mod:`worldloom.testkit.models`) on the CPU with one
torch thread; ``env`` adds or overrides ``WORLDLOOM_GENERATE_*`` settings (e.g. limits). Start-up
failures raise :class:`~worldloom.testkit.process.ServerStartError` with the server's log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from worldloom.testkit.ports import LOOPBACK, free_port
from worldloom.testkit.services import ServiceProcess


class GenerateServer(ServiceProcess):
    ready_path = "/v2/health/ready"

    def __init__(self, store_root: Path, model_ids: Sequence[str], *, token: str, grpc: bool = False,
                 env: Mapping[str, str] | None = None, ready_timeout: float = 120.0) -> None:
        super().__init__("generate", token=token, ready_timeout=ready_timeout)
        self.store_root, self.model_ids, self.grpc = Path(store_root), list(model_ids), grpc
        self.extra_env = dict(env or {})
        self.grpc_port = 0

    @property
    def grpc_address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def prepare(self) -> None:
        super().prepare()
        if not self.resuming:
            self.grpc_port = free_port() if self.grpc else 0

    def service_settings(self) -> dict[str, str]:
        settings = {**super().service_settings(), "MODEL_IDS": ",".join(self.model_ids),
                    "STORE__ROOT": str(self.store_root), "DEVICE": "cpu", "TORCH_THREADS": "1",
                    "PRELOAD_TEXT_EMBEDDER": "false"}
        if self.grpc:
            settings.update({"GRPC__ENABLED": "true", "GRPC__PORT": str(self.grpc_port)})
        return settings

    def environment(self) -> dict[str, str]:
        # extra_env: full variable names (WORLDLOOM_GENERATE_* limits, thread counts), applied last
        return {**super().environment(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **self.extra_env}
