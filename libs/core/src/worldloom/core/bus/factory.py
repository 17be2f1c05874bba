"""Chooses the transport from settings, so service code never names one."""

from __future__ import annotations

from worldloom.core.bus.base import Bus
from worldloom.core.settings import BusSettings


def make_bus(settings: BusSettings) -> Bus:
    if settings.kind == "kafka":
        from worldloom.core.bus.kafka import KafkaBus

        return KafkaBus(settings)
    from worldloom.core.bus.inprocess import InProcessBus

    return InProcessBus(
        partitions=settings.partitions,
        max_attempts=settings.max_attempts,
        retry_backoff_s=settings.retry_backoff_s,
        max_poll_records=settings.max_poll_records,
        batch_retry_backoff_s=settings.batch_retry_backoff_s,
        batch_retry_backoff_max_s=settings.batch_retry_backoff_max_s,
    )
