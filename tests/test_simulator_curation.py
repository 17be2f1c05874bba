"""Simulator episodes are ordinary data: recorded by the ingest service's gymnasium source, curated by the
event-driven path with the simulator profile (the default filters reject rendered white backgrounds as
overexposed, and near-identical episodes as duplicates) and accepted as training clips."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import ClipRecord
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings, VectorSettings
from worldloom.core.store.local import LocalStore
from worldloom.core.vectors import VectorIndex


def test_gymnasium_episodes_are_curated_with_the_simulator_profile(tmp_path: Path) -> None:
    pytest.importorskip("gymnasium")
    from worldloom.cli.client import WorldloomClient
    from worldloom.curate.app import build_app as build_curate
    from worldloom.curate.config import SIMULATOR_PROFILE, CurationConfig, config_with
    from worldloom.curate.settings import CurateSettings
    from worldloom.ingest.app import build_app as build_ingest
    from worldloom.ingest.settings import IngestSettings

    http = HttpSettings(auth_required=False)
    ss = StoreSettings(kind="local", root=tmp_path / "store")
    store, bus = LocalStore(ss.root), InProcessBus()
    vectors = VectorSettings(uri=str(tmp_path / "v.db"))
    curate_app = build_curate(CurateSettings(store=ss, http=http, vectors=vectors), store=store, bus=bus,
                              index=VectorIndex(vectors.uri))
    service = curate_app.state.curate
    sim_hash = service.config_hash(config_with(SIMULATOR_PROFILE))
    assert sim_hash != service.config_hash(CurationConfig())
    with BackgroundServer(build_ingest(IngestSettings(store=ss, http=http), store=store, bus=bus)) as ingest, \
            BackgroundServer(curate_app), WorldloomClient(ingest.url, "unused") as client:
        job = client.start_gymnasium({"env": "Pendulum-v1", "episodes": 3, "max_steps": 60, "seed": 0})
        deadline = time.monotonic() + 240
        while client.source_job(job["job_id"])["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        records: list[ClipRecord] = []
        while len(records) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            records = [ClipRecord.model_validate(json.loads(p.read_bytes()))
                       for p in (ss.root / "clips").glob("*/meta.json")] if (ss.root / "clips").exists() else []
    assert len(records) == 3, records
    assert all(r.status == "accepted" and r.config_hash == sim_hash and r.source == "gymnasium/Pendulum-v1" for r in records), \
        [(r.status, r.config_hash, sim_hash, r.source) for r in records]
