"""What a service under test receives and announces: multipart uploads in, decoded bus events out.

Works with FastAPI's TestClient and httpx clients alike; the worldloom packages are imported when a
helper is called, so `import worldloom.testkit` stays free of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worldloom.core.bus.inprocess import InProcessBus
    from worldloom.core.events import Envelope


def upload(client: Any, url: str, path: Path, *, name: str | None = None, content_type: str = "video/mp4",
           headers: dict[str, str] | None = None, **fields: str) -> Any:
    """POSTs ``path`` as the multipart part ``file`` (named ``name``, default its file name) with form
    ``fields``; returns the client's response."""
    with open(path, "rb") as f:
        files = {"file": (name or path.name, f, content_type)}
        return client.post(url, files=files, data=fields or None, headers=headers)


def published(bus: InProcessBus, topic: str) -> list[Envelope]:
    """Every event on ``topic`` of an in-process bus, decoded, oldest first."""
    from worldloom.core import events

    return [events.decode(m.value) for m in bus.messages(topic)]
