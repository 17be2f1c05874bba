from __future__ import annotations

from pathlib import Path

import pytest

from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.settings import StoreSettings
from worldloom.core.store import make_store
from worldloom.video.ingest import IngestService
from worldloom.video.limits import VideoLimits


@pytest.fixture
def ingest(tmp_path: Path):
    """The shared ingest core on a local directory store and an in-process bus: (service, bus, store)."""
    bus = InProcessBus()
    store = make_store(StoreSettings(root=tmp_path / "store"))
    return IngestService(store, bus, VideoLimits(max_bytes=8 * 1024 * 1024)), bus, store
