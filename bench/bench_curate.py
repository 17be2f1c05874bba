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
from worldloom.models.text_embedder import shared_text_embedder
from worldloom.video.ingest import IngestService
from worldloom.video.limits import VideoLimits
from worldloom.video.probe import probe

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
INPUTS = ["video/pyscenedetect/testvideo.mp4", "video/pyscenedetect/issue-134-rotate.mp4"]


def one_rep(files: list[Path], parallel: int = 2) -> tuple[float, float, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        store, bus = LocalStore(Path(tmp) / "store"), InProcessBus()
        index = VectorIndex(str(Path(tmp) / "v.db"))
        ingest = IngestService(store, bus, VideoLimits())
        ids = [ingest.ingest_file(f, f.name).video.video_id for f in files]
        svc = CurateService(store, bus, index, CurateSettings(http=HttpSettings(auth_required=False),
                                                              parallel_videos=parallel))
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
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2], help="videos curated at once")
    args = ap.parse_args()
    files = [DATA / f for f in INPUTS]
    for f in files:
        i = probe(f)
        print(f"input {f.name}: {i.width}x{i.height} {i.fps:.2f} fps {i.duration_s:.1f}s")
    shared_text_embedder()  # model load is start-up cost, not per-video cost
    one_rep(files[:1])  # warm-up
    walls: dict[int, list[float]] = defaultdict(list)
    stage_totals: dict[str, list[float]] = defaultdict(list)
    video_s = 0.0
    for _ in range(args.reps):  # interleaved, so machine noise hits every setting alike
        for p in args.parallel:
            wall, video_s, stages = one_rep(files, p)
            walls[p].append(wall)
            if p == args.parallel[0]:
                for k, v in stages.items():
                    stage_totals[k].append(v)
    print(f"video seconds per run: {video_s:.1f} on {__import__('os').cpu_count()} cores, medians of {args.reps}")
    for p in args.parallel:
        wall = statistics.median(walls[p])
        print(f"parallel_videos={p}: {wall:.2f}s wall -> {video_s / wall:.1f}x real time")
    base = statistics.median(walls[args.parallel[0]])
    print(f"stage seconds (parallel_videos={args.parallel[0]}):")
    for k, v in stage_totals.items():
        print(f"  {k:<13} {statistics.median(v):6.2f}s  ({100 * statistics.median(v) / base:4.1f}%)")


if __name__ == "__main__":
    main()
