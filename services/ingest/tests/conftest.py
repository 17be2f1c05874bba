from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.ingest.app import build_app
from worldloom.ingest.settings import IngestSettings

TOKEN = "test-token"


def make_settings(**kw) -> IngestSettings:
    kw.setdefault("http", HttpSettings(api_tokens=TOKEN))
    return IngestSettings(**kw)


@pytest.fixture
def ingest_settings():
    """Settings factory with the test token (tests pass store/bus blocks)."""
    return make_settings


@pytest.fixture
def embedded(tmp_path: Path):
    """Ingest on the embedded defaults: local directory store, in-process bus."""
    bus = InProcessBus()
    settings = make_settings(store=StoreSettings(root=tmp_path / "store"), max_upload_bytes=8 * 1024 * 1024)
    app = build_app(settings, bus=bus)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, bus, app.state.ingest.store
