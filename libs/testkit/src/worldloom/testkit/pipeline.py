"""The pipeline on servers of its own, every service a process: for tests that crash, stop and restart
pieces of it while videos flow (tests/faults).

    with Pipeline() as p:                       # Kafka, S3 and Milvus of its own (fresh topics, bucket, index)
        ingest, curate = p.service("ingest"), p.service("curate")
        p.start(ingest, curate)
        curate.kill(); curate.start()           # a crash and a restart
        p.kafka.halt(); p.kafka.start()         # a broker outage, same data dir and address

Services get the servers' settings (``WORLDLOOM_<SERVICE>_BUS__*``, ``STORE__*``, ``VECTORS__URI`` for
curate and search) and their default consumer groups, so replicas of one service share a group. Leaving
the block stops every service, then every server, failing or not.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from worldloom.testkit.kafka import KafkaServer
from worldloom.testkit.milvus import MilvusServer
from worldloom.testkit.s3 import S3Server
from worldloom.testkit.services import ServiceProcess

if TYPE_CHECKING:
    from worldloom.core.settings import StoreSettings
    from worldloom.core.store.s3 import S3Store

#: services whose settings name the vector index
_VECTOR_USERS = frozenset({"curate", "search"})


class Pipeline:
    def __init__(self, *, bucket: str = "pipeline", token: str = "pipeline", partitions: int = 3,
                 logs: Path | None = None, kafka_properties: dict[str, str] | None = None) -> None:
        """``logs``: a folder that keeps each service's stdout (``<name>/stdout.log``, restarts appended);
        ``kafka_properties``: broker settings added to the testkit's (e.g. an authorizer, for ACL faults)."""
        self.bucket, self.token, self.partitions, self.logs = bucket, token, partitions, logs
        self.kafka, self.s3, self.milvus = KafkaServer(properties=kafka_properties), S3Server(), MilvusServer()
        self.services: list[ServiceProcess] = []

    # servers --------------------------------------------------------------------------------------
    def start_servers(self) -> Self:
        """All three at once (their start-ups overlap), then wait until each answers."""
        try:
            for server in (self.kafka, self.s3, self.milvus):
                server.launch()
            for server in (self.kafka, self.s3, self.milvus):
                server.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def store_settings(self) -> StoreSettings:
        from worldloom.core.settings import StoreSettings

        return StoreSettings(kind="s3", endpoint=self.s3.endpoint, bucket=self.bucket,
                             access_key=self.s3.access_key, secret_key=self.s3.secret_key)

    @functools.cached_property
    def store(self) -> S3Store:
        """The pipeline's bucket, as the services see it (made on first use)."""
        from worldloom.core.store.s3 import S3Store

        return S3Store(self.store_settings)

    # services -------------------------------------------------------------------------------------
    def settings_for(self, service: str, name: str) -> dict[str, str]:
        settings = {
            "BUS__KIND": "kafka", "BUS__BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "BUS__PARTITIONS": str(self.partitions), "BUS__CLIENT_ID": name,
            # a killed member's partitions move on after 10 s, not Kafka's 45 s
            "BUS__SESSION_TIMEOUT_MS": "10000",
            "STORE__KIND": "s3", "STORE__ENDPOINT": self.s3.endpoint, "STORE__BUCKET": self.bucket,
            "STORE__ACCESS_KEY": self.s3.access_key, "STORE__SECRET_KEY": self.s3.secret_key,
        }
        if service in _VECTOR_USERS:
            settings["VECTORS__URI"] = self.milvus.uri
        return settings

    def service(self, service: str, name: str | None = None, **settings: str) -> ServiceProcess:
        """A (not yet started) process of ``service``; ``settings`` add to or override the servers' ones."""
        name = name or service
        proc = ServiceProcess(service, {**self.settings_for(service, name), **settings}, token=self.token, name=name,
                              workdir=self.logs / name if self.logs is not None else None)
        self.services.append(proc)
        return proc

    def start(self, *services: ServiceProcess) -> None:
        """Start several at once and wait for each (their imports and model loads overlap)."""
        for proc in services:
            proc.launch()
        for proc in services:
            proc.wait_ready()

    # lifecycle ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Services first (they flush and leave their groups), then the servers; every one is tried."""
        errors: list[BaseException] = []
        for thing in [*self.services, self.kafka, self.s3, self.milvus]:
            try:
                thing.stop()
            except Exception as exc:  # stop the rest, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        return self.start_servers()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

