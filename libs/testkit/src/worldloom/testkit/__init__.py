"""Real Kafka, S3 (SeaweedFS), Milvus Lite and generate servers on 127.0.0.1 for integration tests and local
dev (each can be halted or killed and started again with its data: outages and crashes), any Worldloom
service as a process (``services.ServiceProcess``), plus the helpers tests share instead of copying: ``models`` (tiny tokenizers and world models) and
``clips`` (curated clips) put test inputs in a store, ``media`` (shared clips, frames, stage tasks) and
``uploads`` (multipart uploads in, decoded bus events out), ``imagination`` (tiny world models that
react to actions, and WorldModelEnvs over them, for the RL tests).

Classes load lazily so `import worldloom.testkit` stays cheap (pymilvus and kafka-python are heavy).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "KafkaServer": "worldloom.testkit.kafka",
    "S3Server": "worldloom.testkit.s3",
    "MilvusServer": "worldloom.testkit.milvus",
    "GenerateServer": "worldloom.testkit.generate",
    "ServiceProcess": "worldloom.testkit.services",
    "ManagedProcess": "worldloom.testkit.process",
    "ServerStartError": "worldloom.testkit.process",
    "free_port": "worldloom.testkit.ports",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
