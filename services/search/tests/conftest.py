"""A real curated catalog for search tests: real videos ingested and curated by the real pipeline
into a local store and a Milvus Lite file (built once per session, ~30 s on 2 cores)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import ClipRecord, iter_clip_records
from worldloom.core.settings import HttpSettings
from worldloom.core.store.local import LocalStore
from worldloom.core.vectors import VectorIndex

TOKEN = "search-token"
VIDEOS = [
    ("video/sintel/sintel_clip_10s.mp4", {"dataset": "sintel", "title": "Sintel trailer"}),
    ("bridge/videos/train/1432/rgb.mp4", None),
    ("bridge/videos/train/346/rgb.mp4", None),
    ("bridge/videos/train/83/rgb.mp4", None),
    ("bridge/videos/val/2390/rgb.mp4", None),
    ("bridge/videos/train/9496/rgb.mp4", None),
]


@dataclass
class Catalog:
    root: Path
    store: LocalStore
    index: VectorIndex
    bus: InProcessBus
    records: list[ClipRecord]


def _bridge_attrs(data: Path, rel: str) -> dict[str, str]:
    import json

    split, episode = rel.split("/")[2:4]
    ann = json.loads((data / "bridge/annotation" / split / f"{episode}.json").read_text())
    return {"dataset": "bridge", "instruction": ann["texts"][0]}


@pytest.fixture(scope="session")
def catalog(tmp_path_factory, shared_data) -> Catalog:
    from worldloom.curate.config import CurationConfig
    from worldloom.curate.service import CurateService
    from worldloom.curate.settings import CurateSettings
    from worldloom.video.ingest import IngestService
    from worldloom.video.limits import VideoLimits

    root = tmp_path_factory.mktemp("catalog")
    store, bus, index = LocalStore(root / "store"), InProcessBus(), VectorIndex(str(root / "vectors.db"))
    ingest = IngestService(store, bus, VideoLimits())
    ids = []
    for rel, attrs in VIDEOS:
        attrs = attrs or _bridge_attrs(shared_data, rel)
        ids.append(ingest.ingest_file(shared_data / rel, Path(rel).name, attributes=attrs).video.video_id)
    curate = CurateService(store, bus, index, CurateSettings(http=HttpSettings(auth_required=False)))
    config = CurationConfig()
    run = curate.execute(curate.new_run(ids, config), config)
    assert run.state == "succeeded", run.error
    records = list(iter_clip_records(store))
    return Catalog(root, store, index, bus, records)


@pytest.fixture
def search_app(catalog):
    from worldloom.search.app import build_app
    from worldloom.search.settings import SearchSettings

    settings = SearchSettings(http=HttpSettings(api_tokens=TOKEN))
    return build_app(settings, store=catalog.store, bus=catalog.bus, index=catalog.index)
