"""An in-memory bus with Kafka's semantics (keyed partitions, consumer groups, commits, DLQ).

Used by the embedded mode (one process runs every service) and by unit tests of handlers.
"""

from __future__ import annotations

import threading
import zlib
from collections import defaultdict
from collections.abc import Sequence

from worldloom.core.bus.base import Bus, Consumer, Handler, Message


class InProcessBus(Bus):
    def __init__(self, partitions: int = 1, max_attempts: int = 3, retry_backoff_s: float = 0.05, *,
                 max_poll_records: int = 500, batch_retry_backoff_s: float = 1.0,
                 batch_retry_backoff_max_s: float = 30.0) -> None:
        self.partitions = partitions
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.max_poll_records = max_poll_records
        self.batch_retry_backoff_s = batch_retry_backoff_s
        self.batch_retry_backoff_max_s = batch_retry_backoff_max_s
        self._logs: dict[str, list[list[Message]]] = {}
        self._committed: dict[tuple[str, str, int], int] = defaultdict(int)
        self._claimed: dict[tuple[str, str, int], int] = defaultdict(int)
        self._cond = threading.Condition()

    def ensure_topics(self, topics: Sequence[str]) -> None:
        with self._cond:
            for topic in topics:
                self._logs.setdefault(topic, [[] for _ in range(self.partitions)])

    def publish_raw(self, topic: str, value: bytes, key: str | None = None, *, wait: bool = True) -> None:
        self.ensure_topics([topic])
        with self._cond:
            parts = self._logs[topic]
            p = zlib.crc32(key.encode()) % len(parts) if key else sum(map(len, parts)) % len(parts)
            parts[p].append(Message(topic, p, len(parts[p]), key, bytes(value)))
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        return None  # every publish is immediately visible

    def consumer(self, topics: Sequence[str], group: str, handler: Handler) -> Consumer:
        self.ensure_topics(list(topics))
        return InProcessConsumer(
            self, list(topics), group, handler,
            max_attempts=self.max_attempts, retry_backoff_s=self.retry_backoff_s,
            batch_retry_backoff_s=self.batch_retry_backoff_s, batch_retry_backoff_max_s=self.batch_retry_backoff_max_s,
        )

    def messages(self, topic: str) -> list[Message]:
        """Everything ever written to a topic, in partition order (for tests and the demo report)."""
        with self._cond:
            return [m for part in self._logs.get(topic, []) for m in part]

    # consumer-side bookkeeping, under the bus lock
    def _claim(self, topics: list[str], group: str, max_records: int) -> list[Message]:
        batch: list[Message] = []
        for topic in topics:
            for p, part in enumerate(self._logs[topic]):
                pos = self._claimed[(group, topic, p)]
                take = part[pos : pos + max_records - len(batch)]
                batch.extend(take)
                self._claimed[(group, topic, p)] = pos + len(take)
                if len(batch) >= max_records:
                    return batch
        return batch


class InProcessConsumer(Consumer):
    def __init__(self, bus: InProcessBus, topics: list[str], group: str, handler: Handler, **kw: float) -> None:
        super().__init__(bus, group, handler, **kw)  # type: ignore[arg-type]
        self._bus = bus
        self._topics = topics
        self._uncommitted: list[Message] = []

    def _fetch(self, timeout_s: float) -> list[Message]:
        with self._bus._cond:
            batch = self._bus._claim(self._topics, self.group, self._bus.max_poll_records)
            if not batch:
                self._bus._cond.wait(timeout_s)
                batch = self._bus._claim(self._topics, self.group, self._bus.max_poll_records)
            self._uncommitted.extend(batch)
            return batch

    def _commit(self, batch: list[Message]) -> None:
        with self._bus._cond:
            for m in batch:
                k = (self.group, m.topic, m.partition)
                self._bus._committed[k] = max(self._bus._committed[k], m.offset + 1)
            done = {(m.topic, m.partition, m.offset) for m in batch}
            self._uncommitted = [m for m in self._uncommitted if (m.topic, m.partition, m.offset) not in done]

    def _seek(self, positions: dict[tuple[str, int], int]) -> None:
        """Hands messages from `positions` on back to the group (never skips what another claimed)."""
        with self._bus._cond:
            for (topic, p), offset in positions.items():
                k = (self.group, topic, p)
                self._bus._claimed[k] = min(self._bus._claimed[k], offset)
            self._uncommitted = [
                m for m in self._uncommitted
                if m.offset < positions.get((m.topic, m.partition), m.offset + 1)
            ]

    def _leave(self) -> None:
        """Rewinds the group to its committed offsets, as Kafka redelivers after a member leaves."""
        with self._bus._cond:
            for m in self._uncommitted:
                k = (self.group, m.topic, m.partition)
                self._bus._claimed[k] = min(self._bus._claimed[k], self._bus._committed[k])
            self._uncommitted.clear()
