"""Whole curation pipeline speed in video-seconds per wall-second on 720p input (aim: >= 10x real time).

Runs the real pipeline (split, transcode, filter, annotate, embed, dedup, write) on the 720p videos in
../shared/data with the embedded defaults, models loaded before the clock starts; every repetition
uses a fresh store and index so nothing is skipped as already curated. Prints per-stage seconds too.
Usage: python bench/bench_curate.py [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.settings import HttpSettings
from worldloom.core.store.local import LocalStore
from worldloom.core.vectors import VectorIndex
from worldloom.curate.config import CurationConfig
from worldloom.curate.service import CurateService
from worldloom.curate.settings import CurateSettings
from worldloom.ingest.service import IngestService
from worldloom.models.text_embedder import shared_text_embedder
from worldloom.video.limits import VideoLimits
from worldloom.video.probe import probe

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
INPUTS = ["video/pyscenedetect/testvideo.mp4", "video/pyscenedetect/issue-134-rotate.mp4"]


def one_rep(files: list[Path]) -> tuple[float, float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        store, bus = LocalStore(Path(tmp) / "store"), InProcessBus()
        index = VectorIndex(str(Path(tmp) / "v.db"))
        ingest = IngestService(store, bus, VideoLimits())
        ids = [ingest.ingest_file(f, f.name).video.video_id for f in files]
        svc = CurateService(store, bus, index, CurateSettings(http=HttpSettings(auth_required=False)))
        config = CurationConfig()
        svc.pipeline(config).setup()
        start = time.perf_counter()
        run = svc.execute(svc.new_run(ids, config), config)
        wall = time.perf_counter() - start
        index.close()
        return wall, run.video_seconds, {k: v.seconds for k, v in run.stage_counts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    files = [DATA / f for f in INPUTS]
    for f in files:
        i = probe(f)
        print(f"input {f.name}: {i.width}x{i.height} {i.fps:.2f} fps {i.duration_s:.1f}s")
    shared_text_embedder()  # model load is start-up cost, not per-video cost
    one_rep(files[:1])  # warm-up
    walls, stage_totals = [], defaultdict(list)
    video_s = 0.0
    for _ in range(args.reps):
        wall, video_s, stages = one_rep(files)
        walls.append(wall)
        for k, v in stages.items():
            stage_totals[k].append(v)
    wall = statistics.median(walls)
    print(f"video seconds: {video_s:.1f}, wall seconds (median of {args.reps}): {wall:.2f}")
    print(f"speed: {video_s / wall:.1f}x real time on {__import__('os').cpu_count()} cores")
    for k, v in stage_totals.items():
        print(f"  {k:<13} {statistics.median(v):6.2f}s  ({100 * statistics.median(v) / wall:4.1f}%)")


if __name__ == "__main__":
    main()
