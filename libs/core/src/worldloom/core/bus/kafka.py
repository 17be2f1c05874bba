"""Kafka transport (kafka-python): acks=all keyed producer, manual commits after handling."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from worldloom.core.bus.base import Bus, Consumer, Handler, Message
from worldloom.core.events import dlq_topic
from worldloom.core.settings import BusSettings

log = logging.getLogger("worldloom.bus.kafka")


class KafkaBus(Bus):
    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._known_topics: set[str] = set()
        self._lock = threading.Lock()

    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.settings.bootstrap_servers,
                    client_id=self.settings.client_id,
                    acks="all",
                    enable_idempotence=True,
                    retries=5,
                    linger_ms=5,
                    max_in_flight_requests_per_connection=5,
                )
            return self._producer

    def _admin_client(self) -> KafkaAdminClient:
        with self._lock:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self.settings.bootstrap_servers,
                    client_id=f"{self.settings.client_id}-admin",
                )
            return self._admin

    def ensure_topics(self, topics: Sequence[str]) -> None:
        missing = [t for t in topics if t not in self._known_topics]
        if not missing:
            return
        admin = self._admin_client()
        existing = set(admin.list_topics())
        new = [
            NewTopic(t, self.settings.partitions, self.settings.replication_factor)
            for t in missing
            if t not in existing
        ]
        for topic in new:  # one at a time: a concurrent creator must not fail the others
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
        self._known_topics.update(missing)

    def publish_raw(self, topic: str, value: bytes, key: str | None = None, *, wait: bool = True) -> None:
        self.ensure_topics([topic])
        future = self.producer.send(topic, value=value, key=key.encode() if key is not None else None)
        if wait:  # skip the linger: a caller waiting for durability wants this record sent now
            self.producer.flush(timeout=30)
            future.get(timeout=30)

    def flush(self, timeout_s: float | None = None) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=timeout_s)

    def consumer(self, topics: Sequence[str], group: str, handler: Handler) -> Consumer:
        self.ensure_topics([*topics, *(dlq_topic(t) for t in topics)])
        return KafkaBusConsumer(self, list(topics), group, handler)

    def healthy(self) -> bool:
        try:
            self._admin_client().list_topics()
            return True
        except Exception as exc:  # readiness must answer, not raise
            log.warning("kafka not reachable: %s", exc)
            return False

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush()
            self._producer.close()
            self._producer = None
        if self._admin is not None:
            self._admin.close()
            self._admin = None


class KafkaBusConsumer(Consumer):
    def __init__(self, bus: KafkaBus, topics: list[str], group: str, handler: Handler) -> None:
        s = bus.settings
        super().__init__(bus, group, handler, max_attempts=s.max_attempts, retry_backoff_s=s.retry_backoff_s)
        self._consumer = KafkaConsumer(
            *topics,
            bootstrap_servers=s.bootstrap_servers,
            client_id=f"{s.client_id}-{group}",
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=500,
        )

    def _fetch(self, timeout_s: float) -> list[Message]:
        records = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        batch = []
        for tp, msgs in records.items():
            for r in msgs:
                key = r.key.decode(errors="replace") if r.key is not None else None
                batch.append(Message(tp.topic, tp.partition, r.offset, key, r.value))
        return batch

    def _commit(self, batch: list[Message]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for m in batch:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in offsets or offsets[tp].offset <= m.offset:
                offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)
        self._consumer.commit(offsets)

    def close(self) -> None:
        self._consumer.close(autocommit=False)
