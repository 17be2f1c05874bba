from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.settings import HttpSettings
from worldloom.core.store.local import LocalStore
from worldloom.core.vectors import VectorIndex

if TYPE_CHECKING:
    from worldloom.curate.service import CurateService


@dataclass
class Env:
    root: Path
    store: LocalStore
    bus: InProcessBus
    index: VectorIndex

    def ingest(self, path: Path, attributes: dict[str, str] | None = None) -> str:
        from worldloom.video.ingest import IngestService
        from worldloom.video.limits import VideoLimits

        svc = IngestService(self.store, self.bus, VideoLimits())
        return svc.ingest_file(path, path.name, attributes=attributes or {}).video.video_id

    def curate_service(self, **settings: Any) -> CurateService:
        from worldloom.curate.service import CurateService
        from worldloom.curate.settings import CurateSettings

        return CurateService(self.store, self.bus, self.index,
                             CurateSettings(http=HttpSettings(auth_required=False), **settings))


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path, LocalStore(tmp_path / "store"), InProcessBus(retry_backoff_s=0.01),
               VectorIndex(str(tmp_path / "vectors.db")))
