"""The bus contract shared by both transports.

Delivery is at-least-once: a consumer commits a message only after it was handled or dead-lettered,
so a crash redelivers. Handlers make that safe by being idempotent (outputs keyed by content hashes or
input ids). A message that cannot be handled goes to `<topic>.dlq` with the reason, and the consumer
moves on. Anything else that goes wrong in a batch (the dead-letter write, a commit, the broker)
rewinds the consumer to the first unfinished message, which is retried after a growing pause.

Handlers run on a worker thread per consumer while the consumer thread keeps polling with fetching
paused: a slow handler (a whole video's curation) never makes Kafka think the member died, so the
group does not rebalance and redeliver a batch that is still being handled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from worldloom.core import events
from worldloom.core.errors import DependencyUnavailable
from worldloom.core.events import DeadLetter, Envelope, EventDecodeError

log = logging.getLogger("worldloom.bus")

Handler = Callable[[Envelope], None]

PUBLISHED = Counter("worldloom_bus_published_total", "Events published", ["topic"])
HANDLED = Counter(
    "worldloom_bus_handled_total", "Messages consumed by outcome", ["topic", "group", "outcome"]
)
HANDLE_SECONDS = Histogram("worldloom_bus_handle_seconds", "Handler latency", ["topic", "group"])
# How often a batch running longer than keepalive_s commits its finished messages (a fast batch
# commits once, at its end): a crash or a rebalance then redoes little more than the message in flight.
PROGRESS_COMMIT_S = 0.1

BATCH_FAILURES = Counter(
    "worldloom_bus_batch_failures_total", "Batches rewound after an error outside the handler", ["group"]
)


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help (bad payload, missing input): straight to the DLQ."""


@dataclass(frozen=True)
class PublishFailure:
    topic: str
    key: str | None
    error: BaseException


class PublishError(Exception):
    """Records published with wait=False that were not acknowledged: the unit of work must not be
    marked done (its markers unwritten), so that it is redone and its events published again."""

    def __init__(self, failures: list[PublishFailure], total: int) -> None:
        self.failures = failures
        shown = "; ".join(f"{f.topic}[{f.key}]: {f.error!r}" for f in failures[:5])
        super().__init__(f"{len(failures)} of {total} records were not acknowledged: {shown}")


class BatchFailed(Exception):
    """A batch stopped at `message` (not committed, rewound to it) because of `__cause__`."""

    def __init__(self, message: Message, group: str, cause: BaseException) -> None:
        self.message = message
        super().__init__(
            f"topic={message.topic} partition={message.partition} offset={message.offset} "
            f"group={group}: {cause.__class__.__name__}: {cause}"
        )


class Bus(ABC):
    """Publishes envelopes and creates consumers; one instance per process."""

    @abstractmethod
    def publish_raw(self, topic: str, value: bytes, key: str | None = None, *, wait: bool = True) -> None:
        """Appends bytes to a topic; with wait=True returns only once the write is durable (else raises)."""

    def publish(self, topic: str, event: Envelope, key: str | None = None, *, wait: bool = True) -> None:
        self.publish_raw(topic, events.encode(event), key, wait=wait)
        PUBLISHED.labels(topic).inc()

    @abstractmethod
    def flush(self, timeout_s: float | None = None) -> None:
        """Blocks until every publish with wait=False by this thread is durable; raises PublishError
        naming each record that is not (refused, or not acknowledged within timeout_s).

        Per thread, because units of work publishing in parallel share one producer: each must learn
        of its own losses, and none may consume another's."""

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
        return None  # an optional hook, not an abstract method


class _Progress:
    """How far the worker got in a batch: `done` messages finished (handled or dead-lettered)."""

    def __init__(self) -> None:
        self.done = 0


class _Worker:
    """One daemon thread per consumer that runs the handlers of one batch at a time.

    Daemon, unlike a ThreadPoolExecutor's threads: a process exiting mid-batch must not wait for the
    batch; its uncommitted messages are redelivered anyway."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], None]) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn))
        return future

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the consumer thread, which decides
                    future.set_exception(exc)

    def close(self) -> None:
        self._jobs.put(None)


class Consumer(ABC):
    """Shared consume loop: fetch, handle on the worker (retry with backoff, dead-letter) while the
    consumer thread keeps the membership alive, commit in order; on any other error rewind and retry."""

    def __init__(
        self,
        bus: Bus,
        group: str,
        handler: Handler,
        *,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.2,
        batch_retry_backoff_s: float = 1.0,
        batch_retry_backoff_max_s: float = 30.0,
        keepalive_s: float = 0.5,
    ) -> None:
        self.bus = bus
        self.group = group
        self.handler = handler
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.batch_retry_backoff_s = batch_retry_backoff_s
        self.batch_retry_backoff_max_s = batch_retry_backoff_max_s
        self.keepalive_s = keepalive_s
        self._worker: _Worker | None = None
        self._interrupted = threading.Event()  # set by a transport that lost partitions mid-batch

    # transport hooks ------------------------------------------------------------------------------
    @abstractmethod
    def _fetch(self, timeout_s: float) -> list[Message]:
        """Returns the next batch (possibly empty after timeout_s)."""

    @abstractmethod
    def _commit(self, messages: list[Message]) -> None:
        """Makes the group's position durable just past each partition's last message in `messages`."""

    @abstractmethod
    def _seek(self, positions: dict[tuple[str, int], int]) -> None:
        """Makes the next fetch of each (topic, partition) start at the given offset."""

    def _hold(self) -> None:
        """Stops fetching new messages while the worker owns a batch (the default fetches only on demand)."""
        return None  # an optional hook, not an abstract method

    def _keepalive(self) -> None:
        """Called every keepalive_s while a batch is handled: tells the broker this member is alive."""
        return None  # an optional hook, not an abstract method

    def _release(self) -> None:
        """Undoes _hold once the batch is finished and committed (or rewound)."""
        return None  # an optional hook, not an abstract method

    @abstractmethod
    def _leave(self) -> None:
        """Leaves the group; uncommitted messages will be redelivered to another member."""

    # the loop -------------------------------------------------------------------------------------
    def poll_once(self, timeout_s: float = 0.5, stop: threading.Event | None = None) -> int:
        """Handles one batch and commits it; returns the number of messages finished.

        A set `stop` ends the batch after the current message, and so does a rebalance (the
        partitions may now belong to another member): what was finished is committed, the rest is
        left for the next poll (or member). Raises BatchFailed after rewinding to the first
        message not committed when the batch could not be finished."""
        batch = self._fetch(timeout_s)
        if not batch:
            return 0
        progress, committed, error = _Progress(), 0, None
        self._interrupted.clear()
        if self._worker is None:
            self._worker = _Worker(f"bus-{self.group}-handler")
        try:
            self._hold()
            work = self._worker.submit(lambda: self._process_batch(batch, progress, stop))
            started = alive_at = time.monotonic()
            while True:
                try:
                    work.result(timeout=min(PROGRESS_COMMIT_S, self.keepalive_s))
                    break
                except FutureTimeout:
                    now = time.monotonic()
                    if now - alive_at >= self.keepalive_s:
                        self._try_keepalive()
                        alive_at = now
                    if now - started >= self.keepalive_s:  # a slow batch: commit as it goes
                        committed = self._commit_progress(batch, progress.done, committed)
        except Exception as exc:  # from the worker (the dead-letter write failed) or from _hold
            error = exc
        try:
            done = progress.done
            if done > committed:
                self._commit(batch[:done])
                committed = done
        except Exception as exc:
            error = error or exc
        finally:
            try:
                self._seek(_next_positions(batch, committed))  # exact: the rest is fetched again
            finally:
                self._release()
        if error is not None:
            BATCH_FAILURES.labels(self.group).inc()
            raise BatchFailed(batch[committed], self.group, error) from error
        return committed

    def _try_keepalive(self) -> None:
        try:
            self._keepalive()
        except Exception as exc:  # transient; the batch's own commit decides
            log.warning("keepalive failed (group=%s): %s", self.group, exc)

    def _commit_progress(self, batch: list[Message], done: int, committed: int) -> int:
        """While the worker runs: commit what is finished, in order; returns what is committed."""
        if done > committed:
            try:
                self._commit(batch[:done])
                return done
            except Exception as exc:
                log.warning("progress commit failed (group=%s): %s", self.group, exc)
        return committed

    def run(self, stop: threading.Event, timeout_s: float = 0.5) -> None:
        """Consumes until stop is set; a failing batch, fetch or commit is logged and retried after a
        pause that doubles up to batch_retry_backoff_max_s (reset by the next good poll), never fatal."""
        delay = self.batch_retry_backoff_s
        while not stop.is_set():
            try:
                self.poll_once(timeout_s, stop)
                delay = self.batch_retry_backoff_s
                continue
            except BatchFailed as exc:
                log.error("batch failed at %s; rewound to it, retrying in %.2fs", exc, delay, exc_info=exc.__cause__)
            except Exception:  # transport trouble while fetching: keep the consumer alive
                log.exception("consumer loop error (group=%s); retrying in %.2fs", self.group, delay)
            stop.wait(delay)
            delay = min(max(delay * 2, 0.01), self.batch_retry_backoff_max_s)

    def drain(self, idle_polls: int = 2, timeout_s: float = 0.5, max_seconds: float = 120.0) -> int:
        """Consumes until `idle_polls` consecutive empty polls; returns messages processed (tests, demo)."""
        total, idle, deadline = 0, 0, time.monotonic() + max_seconds
        while idle < idle_polls and time.monotonic() < deadline:
            n = self.poll_once(timeout_s)
            total += n
            idle = 0 if n else idle + 1
        return total

    def close(self) -> None:
        """Leaves the group; uncommitted messages will be redelivered to another member."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self._leave()

    # one batch, on the worker ---------------------------------------------------------------------
    def _process_batch(self, batch: list[Message], progress: _Progress, stop: threading.Event | None) -> None:
        for msg in batch:
            if (stop is not None and stop.is_set()) or self._interrupted.is_set():
                return  # the rest is fetched again (by this member or the partitions' new owner)
            self._process(msg)
            progress.done += 1

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
            except DependencyUnavailable:
                raise  # an outage, not this message's fault: the batch rewinds and is retried with backoff
            except PermanentError as exc:
                self._dead_letter(msg, exc, attempts=attempt)
                return
            except Exception as exc:
                if attempt == self.max_attempts:
                    self._dead_letter(msg, exc, attempts=attempt)
                    return
                log.warning(
                    "handler failed (topic=%s partition=%s offset=%s group=%s attempt=%s/%s): %s",
                    msg.topic, msg.partition, msg.offset, self.group, attempt, self.max_attempts, exc,
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


def _next_positions(batch: list[Message], committed: int) -> dict[tuple[str, int], int]:
    """Per partition of the batch: the first offset not committed, else just past its last message."""
    positions: dict[tuple[str, int], int] = {}
    for m in batch[:committed]:
        positions[(m.topic, m.partition)] = m.offset + 1
    rewound: set[tuple[str, int]] = set()
    for m in batch[committed:]:
        tp = (m.topic, m.partition)
        if tp not in rewound:
            rewound.add(tp)
            positions[tp] = m.offset
    return positions
