"""Event bus with two interchangeable transports: Kafka (cluster) and in-process (embedded, tests)."""

from worldloom.core.bus.base import Bus, Consumer, Handler, Message, PermanentError
from worldloom.core.bus.factory import make_bus

__all__ = ["Bus", "Consumer", "Handler", "Message", "PermanentError", "make_bus"]
