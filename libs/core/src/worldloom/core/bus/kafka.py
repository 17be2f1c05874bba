"""Kafka transport (kafka-python): acks=all keyed producer, manual commits after handling."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, RebalanceInProgressError, TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import Counter

from worldloom.core.bus.base import Bus, Consumer, Handler, Message, PublishError, PublishFailure
from worldloom.core.events import dlq_topic
from worldloom.core.settings import BusSettings

log = logging.getLogger("worldloom.bus.kafka")
ASSIGNMENTS = Counter(
    "worldloom_bus_assignments_total", "Non-empty partition assignments; a member that got two was rebalanced",
    ["group"],
)
PUBLISH_FAILURES = Counter("worldloom_bus_publish_failures_total", "Records the broker did not acknowledge", ["topic"])


@dataclass(frozen=True)
class _Sent:
    topic: str
    key: str | None
    future: FutureRecordMetadata


class KafkaBus(Bus):
    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._producer_broken = False
        self._admin: KafkaAdminClient | None = None
        self._known_topics: set[str] = set()
        self._lock = threading.Lock()
        self._unflushed: dict[int, list[_Sent]] = {}  # thread ident -> its publishes with wait=False

    @property
    def producer(self) -> KafkaProducer:
        """The shared producer; replaced once a record failed for a reason retrying cannot fix.

        kafka-python 3's idempotent producer turns such a failure (e.g. a record larger than the
        topic's max.message.bytes) into a fatal state in which every later record fails too, so one
        refused dead letter would otherwise stop every publish of the process until restart. The
        records pending on the old producer have failed with it or still complete; their futures
        are tracked and reported either way."""
        old = None
        with self._lock:
            if self._producer is not None and self._producer_broken:
                old, self._producer = self._producer, None
            if self._producer is None:
                self._producer_broken = False
                self._producer = KafkaProducer(
                    bootstrap_servers=self.settings.bootstrap_servers,
                    client_id=self.settings.client_id,
                    acks="all",
                    enable_idempotence=True,
                    retries=5,
                    linger_ms=5,
                    max_in_flight_requests_per_connection=5,
                )
            producer = self._producer
        if old is not None:
            log.warning("replacing the Kafka producer after a record it could not deliver")
            old.close(timeout=5)
        return producer

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
        producer = self.producer
        future = producer.send(topic, value=value, key=key.encode() if key is not None else None)
        future.add_errback(self._failed, producer, topic, key)
        if wait:  # skip the linger: a caller waiting for durability wants this record sent now
            _send_now(producer, 30)
            future.get(timeout=30)
            return
        with self._lock:
            mine = self._unflushed.setdefault(threading.get_ident(), [])
            if len(mine) >= 10_000:  # a thread that never flushes must not grow this without bound
                mine[:] = [s for s in mine if not s.future.succeeded()]
            mine.append(_Sent(topic, key, future))

    def _failed(self, producer: KafkaProducer, topic: str, key: str | None, exc: BaseException) -> None:
        """Errback on the producer's I/O thread: record, never block."""
        PUBLISH_FAILURES.labels(topic).inc()
        if not getattr(exc, "retriable", False) and producer is self._producer:
            self._producer_broken = True
        log.error("publish to %s (key=%s) failed: %r", topic, key, exc)

    def flush(self, timeout_s: float | None = None) -> None:
        with self._lock:
            mine = self._unflushed.pop(threading.get_ident(), [])
            producer = self._producer
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if producer is not None:
            _send_now(producer, timeout_s)
        failures = []
        for sent in mine:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                sent.future.get(timeout=left)
            except Exception as exc:  # refused, timed out, or lost with a failed producer
                failures.append(PublishFailure(sent.topic, sent.key, exc))
        if failures:
            raise PublishError(failures, len(mine))

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
        with self._lock:
            unflushed = [s for sent in self._unflushed.values() for s in sent]
            self._unflushed.clear()
        if self._producer is not None:
            self._producer.flush()
            self._producer.close()
            self._producer = None
        lost = [s for s in unflushed if s.future.failed() or not s.future.is_done]
        if lost:  # their threads never flushed: the errbacks logged each; say so once more, in sum
            log.error("closing with %d unflushed records not acknowledged, e.g. %s[%s]",
                      len(lost), lost[0].topic, lost[0].key)
        if self._admin is not None:
            self._admin.close()
            self._admin = None


def _send_now(producer: KafkaProducer, timeout_s: float | None) -> None:
    """Sends what lingers and waits for it; only each record's own future says whether it arrived.

    kafka-python's flush() raises KafkaTimeoutError, and UnknownError("Future not done") while a
    batch the broker found too large is split and retried, yet returns quietly for a record refused
    for good."""
    try:
        producer.flush(timeout=timeout_s)
    except KafkaError as exc:
        log.debug("producer flush: %r", exc)


class _Rebalances(ConsumerRebalanceListener):
    """Counts assignments and tells the consumer when partitions are taken away mid-batch, so its
    worker stops after the current message instead of handling what may now be another member's.
    Runs on kafka-python's IO loop, so it only records."""

    def __init__(self, group: str, interrupted: threading.Event) -> None:
        self.group = group
        self.interrupted = interrupted

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:  # the first join may assign nothing until the topic's metadata has arrived
            ASSIGNMENTS.labels(self.group).inc()
        log.info("assigned (group=%s): %s", self.group, sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            self.interrupted.set()
        log.info("revoked (group=%s): %s", self.group, sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        if lost:
            self.interrupted.set()
        log.warning("lost (group=%s): %s", self.group, sorted(f"{tp.topic}[{tp.partition}]" for tp in lost))


class KafkaBusConsumer(Consumer):
    """While the worker handles a batch, every assigned partition is paused and poll() is called
    every keepalive_s: that resets max_poll_interval_ms and serves rebalances, but fetches nothing."""

    def __init__(self, bus: KafkaBus, topics: list[str], group: str, handler: Handler) -> None:
        s = bus.settings
        super().__init__(
            bus, group, handler, max_attempts=s.max_attempts, retry_backoff_s=s.retry_backoff_s,
            batch_retry_backoff_s=s.batch_retry_backoff_s, batch_retry_backoff_max_s=s.batch_retry_backoff_max_s,
            keepalive_s=min(s.poll_timeout_s, s.max_poll_interval_ms / 4000),
        )
        self._consumer = KafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=f"{s.client_id}-{group}",
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.max_poll_records,
            max_poll_interval_ms=s.max_poll_interval_ms,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=min(3000, s.session_timeout_ms // 3),
        )
        self._consumer.subscribe(topics, listener=_Rebalances(group, self._interrupted))
        self._rebalance_timeout_s = s.max_poll_interval_ms / 1000

    def _fetch(self, timeout_s: float) -> list[Message]:
        records = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        batch = []
        for tp, msgs in records.items():
            for r in msgs:
                key = r.key.decode(errors="replace") if r.key is not None else None
                batch.append(Message(tp.topic, tp.partition, r.offset, key, r.value))
        return batch

    def _commit(self, messages: list[Message]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for m in messages:
            tp = TopicPartition(m.topic, m.partition)
            if tp not in offsets or offsets[tp].offset <= m.offset:
                offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)
        deadline = time.monotonic() + self._rebalance_timeout_s
        while True:
            try:
                self._consumer.commit(offsets)
                return
            except RebalanceInProgressError:
                # the group waits for this member's next poll to finish the rebalance: poll (fetching
                # nothing) and commit under the new generation, rather than redo what was handled
                if time.monotonic() > deadline:
                    raise
                self._keepalive()

    def _hold(self) -> None:
        self._consumer.pause(*self._consumer.assignment())

    def _keepalive(self) -> None:
        # A rebalance during the batch assigns partitions unpaused (positions back at the committed
        # offsets): whatever that fetched is handed to no one, so give it back and pause again.
        records = self._consumer.poll(timeout_ms=100)
        for tp, msgs in records.items():
            self._consumer.seek(tp, min(r.offset for r in msgs))
        self._consumer.pause(*self._consumer.assignment())

    def _release(self) -> None:
        self._consumer.resume(*self._consumer.paused())

    def _seek(self, positions: dict[tuple[str, int], int]) -> None:
        assigned = self._consumer.assignment()
        for (topic, partition), offset in positions.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned and self._consumer.position(tp, timeout_ms=5000) != offset:
                self._consumer.seek(tp, offset)  # partitions revoked meanwhile restart from the commit

    def _leave(self) -> None:
        self._consumer.close(autocommit=False)
