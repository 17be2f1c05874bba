"""One replica in a race: ``python replica_worker.py KIND ARGS_JSON`` builds the real service logic on the
shared S3 store, Kafka and Milvus, prints ``ready``, waits for the go file, does its one thing and prints
one JSON line (tests/test_replicas.py starts several at once and counts the effects)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _wait_for(go: str) -> None:
    print("ready", flush=True)
    while not os.path.exists(go):  # every racer fires at the same moment
        time.sleep(0.001)


def ingest(a: dict[str, Any]) -> dict[str, Any]:
    from worldloom.core.bus.kafka import KafkaBus
    from worldloom.core.settings import BusSettings, StoreSettings
    from worldloom.core.store.factory import make_store
    from worldloom.video.ingest import IngestService
    from worldloom.video.limits import VideoLimits

    bus = KafkaBus(BusSettings(**a["bus"]))
    bus.ensure_topics(["videos.ingested"])
    service = IngestService(make_store(StoreSettings(**a["store"])), bus, VideoLimits())
    _wait_for(a["go"])
    result = service.ingest_file(Path(a["file"]), "race.mp4")
    bus.close()
    return {"duplicate": result.duplicate, "event_id": result.video.event_id}


def curate(a: dict[str, Any]) -> dict[str, Any]:
    from worldloom.core.bus.kafka import KafkaBus
    from worldloom.core.settings import BusSettings, HttpSettings, StoreSettings
    from worldloom.core.store.factory import make_store
    from worldloom.core.vectors import VectorIndex
    from worldloom.curate.config import config_with
    from worldloom.curate.service import CurateService
    from worldloom.curate.settings import CurateSettings

    bus = KafkaBus(BusSettings(**a["bus"]))
    bus.ensure_topics(["clips.curated"])
    service = CurateService(make_store(StoreSettings(**a["store"])), bus, VectorIndex(a["milvus"]),
                            CurateSettings(http=HttpSettings(auth_required=False), parallel_videos=1))
    config = config_with({"dedup": {"against_index": False}})
    service.pipeline(config)  # build the stages before the race
    _wait_for(a["go"])
    run = service.execute(service.new_run([a["video_id"]], config, run_id=a["run_id"]), config)
    service.close()
    bus.close()
    video = run.videos[0]
    return {"state": video.state, "error": video.error, "config_hash": run.config_hash}


def dataset(a: dict[str, Any]) -> dict[str, Any]:
    from worldloom.core.bus.kafka import KafkaBus
    from worldloom.core.settings import BusSettings, StoreSettings
    from worldloom.core.store.factory import make_store
    from worldloom.core.vectors import VectorIndex
    from worldloom.search.schemas import DatasetRequest
    from worldloom.search.service import SearchService

    bus = KafkaBus(BusSettings(**a["bus"]))
    bus.ensure_topics(["datasets.created"])
    service = SearchService(VectorIndex(a["milvus"]), make_store(StoreSettings(**a["store"])), bus)
    request = DatasetRequest(name=a["name"], clip_ids=a["clip_ids"], description="raced")
    _wait_for(a["go"])
    manifest = service.create_dataset(request)
    bus.close()
    return {"version": manifest.version}


def main() -> None:
    kind, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"ingest": ingest, "curate": curate, "dataset": dataset}[kind](args)), flush=True)


if __name__ == "__main__":
    main()
