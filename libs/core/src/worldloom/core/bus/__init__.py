"""Event bus with two interchangeable transports: Kafka (cluster) and in-process (embedded, tests)."""

from worldloom.core.bus.base import (
    BatchFailed, Bus, Consumer, Handler, Message, PermanentError, PublishError, PublishFailure,
)
from worldloom.core.bus.factory import make_bus

__all__ = [
    "BatchFailed", "Bus", "Consumer", "Handler", "Message", "PermanentError", "PublishError", "PublishFailure",
    "make_bus",
]
