"""The bus contract shared by both transports.

Delivery is at-least-once: a consumer commits a batch only after every message in it was handled or
dead-lettered, so a crash redelivers. Handlers make that safe by being idempotent (outputs keyed by
content hashes or input ids). A message that cannot be handled goes to `<topic>.dlq` with the reason,
and the consumer moves on.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from worldloom.core import events
from worldloom.core.events import DeadLetter, Envelope, EventDecodeError

log = logging.getLogger("worldloom.bus")

Handler = Callable[[Envelope], None]

PUBLISHED = Counter("worldloom_bus_published_total", "Events published", ["topic"])
HANDLED = Counter(
    "worldloom_bus_handled_total", "Messages consumed by outcome", ["topic", "group", "outcome"]
)
HANDLE_SECONDS = Histogram("worldloom_bus_handle_seconds", "Handler latency", ["topic", "group"])


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help (bad payload, missing input): straight to the DLQ."""


class Bus(ABC):
    """Publishes envelopes and creates consumers; one instance per process."""

    @abstractmethod
    def publish_raw(self, topic: str, value: bytes, key: str | None = None, *, wait: bool = True) -> None:
        """Appends bytes to a topic; with wait=True returns only once the write is durable."""

    def publish(self, topic: str, event: Envelope, key: str | None = None, *, wait: bool = True) -> None:
        self.publish_raw(topic, events.encode(event), key, wait=wait)
        PUBLISHED.labels(topic).inc()

    @abstractmethod
    def flush(self, timeout_s: float | None = None) -> None:
        """Blocks until every publish with wait=False is durable."""

    @abstractmethod
    def consumer(self, topics: Sequence[str], group: str, handler: Handler) -> Consumer:
        """A consumer in `group` (each group sees every message once; members share the work)."""

    @abstractmethod
    def ensure_topics(self, topics: Sequence[str]) -> None:
        """Creates topics (and nothing else) when missing; safe to call repeatedly."""

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        """Releases connections; the default has none."""


class Consumer(ABC):
    """Shared consume loop: decode, retry with backoff, dead-letter, then commit the batch."""

    def __init__(
        self,
        bus: Bus,
        group: str,
        handler: Handler,
        *,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.bus = bus
        self.group = group
        self.handler = handler
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s

    @abstractmethod
    def _fetch(self, timeout_s: float) -> list[Message]:
        """Returns the next batch (possibly empty after timeout_s)."""

    @abstractmethod
    def _commit(self, batch: list[Message]) -> None:
        """Makes the batch's offsets durable for the group."""

    @abstractmethod
    def close(self) -> None:
        """Leaves the group; uncommitted messages will be redelivered to another member."""

    def poll_once(self, timeout_s: float = 0.5) -> int:
        """Handles one batch and commits it; returns the number of messages processed."""
        batch = self._fetch(timeout_s)
        for msg in batch:
            self._process(msg)
        if batch:
            self._commit(batch)
        return len(batch)

    def run(self, stop: threading.Event, timeout_s: float = 0.5) -> None:
        """Consumes until stop is set; a failing fetch or commit is logged and retried, never fatal."""
        while not stop.is_set():
            try:
                self.poll_once(timeout_s)
            except Exception:  # transport trouble: keep the consumer alive
                log.exception("consumer loop error (group=%s); retrying", self.group)
                stop.wait(1.0)

    def drain(self, idle_polls: int = 2, timeout_s: float = 0.5, max_seconds: float = 120.0) -> int:
        """Consumes until `idle_polls` consecutive empty polls; returns messages processed (tests, demo)."""
        total, idle, deadline = 0, 0, time.monotonic() + max_seconds
        while idle < idle_polls and time.monotonic() < deadline:
            n = self.poll_once(timeout_s)
            total += n
            idle = 0 if n else idle + 1
        return total

    def _process(self, msg: Message) -> None:
        try:
            env = events.decode(msg.value)
        except EventDecodeError as exc:
            self._dead_letter(msg, exc, attempts=0)
            return
        for attempt in range(1, self.max_attempts + 1):
            start = time.perf_counter()
            try:
                self.handler(env)
            except PermanentError as exc:
                self._dead_letter(msg, exc, attempts=attempt)
                return
            except Exception as exc:
                if attempt == self.max_attempts:
                    self._dead_letter(msg, exc, attempts=attempt)
                    return
                log.warning(
                    "handler failed (topic=%s offset=%s attempt=%s/%s): %s",
                    msg.topic, msg.offset, attempt, self.max_attempts, exc,
                )
                time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
            else:
                HANDLE_SECONDS.labels(msg.topic, self.group).observe(time.perf_counter() - start)
                HANDLED.labels(msg.topic, self.group, "ok").inc()
                return

    def _dead_letter(self, msg: Message, exc: BaseException, attempts: int) -> None:
        letter = DeadLetter(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key or "",
            value=msg.value,
            error=str(exc) or exc.__class__.__name__,
            error_type=exc.__class__.__name__,
            attempts=attempts,
            consumer_group=self.group,
        )
        letter.failed_at.GetCurrentTime()
        self.bus.publish_raw(events.dlq_topic(msg.topic), letter.SerializeToString(), msg.key, wait=True)
        HANDLED.labels(msg.topic, self.group, "dead_lettered").inc()
        log.error(
            "dead-lettered message (topic=%s partition=%s offset=%s group=%s): %s",
            msg.topic, msg.partition, msg.offset, self.group, letter.error,
        )
