"""Tokenizer training and encoding throughput with 1 vs 2 Ray Train workers on this machine.

Same job both times (tiny 4x8x8 tokenizer, 64x64, 17-frame clips, per-worker batch 4, Bridge train
episodes from ../shared/data) through the real path: clips in an object store, `run_job` on local
Ray, DDP over gloo. One worker gets all cores as torch threads; two workers get one core each, so the
ratio says what data parallelism buys over intra-op threading on the same CPUs. Throughput is taken
from the steady-state log windows (the first window, with Ray start-up and warm-up, is dropped).

    .venv/bin/python bench/bench_tokenizer_ray.py [--steps 40] [--kind continuous]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from worldloom.core.jobs import read_progress, store_settings_payload
from worldloom.core.settings import StoreSettings
from worldloom.core.store.factory import make_store
from worldloom.models.tokenizer import CausalVideoTokenizer, TokenizerConfig
from worldloom.models.tokenizer.job import TokenizerJob, load_clip_tensors, run_job
from worldloom.models.training import ScalingSpec

DATA = Path(os.environ.get("WORLDLOOM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def train_throughput(settings: StoreSettings, keys: list[str], workers: int, args: argparse.Namespace) -> dict:
    store = make_store(settings)
    cores = os.cpu_count() or 1
    job = TokenizerJob(prefix=f"bench/ray-{workers}-{time.time_ns()}", store=store_settings_payload(settings),
                       tokenizer=TokenizerConfig.preset("tiny", args.kind, "4x8x8").to_dict(), train_keys=keys,
                       resolution=64, frames=17, batch=args.batch, num_images=0, steps=args.steps,
                       checkpoint_every=10**6, log_every=5, augment=False)
    t0 = time.perf_counter()
    run_job(job, ScalingSpec(num_workers=workers, cpus_per_worker=max(1, cores // workers)), name=job.prefix.replace("/", "-"))
    wall = time.perf_counter() - t0
    progress = read_progress(store, job.prefix)
    sps = statistics.median(v for _, v in progress.curves["sec_per_step"][1:])
    clips_per_s = args.batch * workers / sps
    return {"workers": workers, "sec_per_step": sps, "clips_per_s": clips_per_s,
            "frames_per_s": clips_per_s * 17, "wall_s": wall}


def encode_throughput(videos: list[torch.Tensor], workers: int, kind: str) -> float:
    """Frames/s encoding+decoding 17-frame clips with ``workers`` Ray tasks splitting the clips."""
    import ray

    model = CausalVideoTokenizer(TokenizerConfig.preset("tiny", kind, "4x8x8")).eval()
    clips = torch.stack([v[:, :17] for v in videos if v.shape[1] >= 17])
    cores = os.cpu_count() or 1

    @ray.remote(num_cpus=max(1, cores // workers))
    def work(state: dict, cfg: dict, part: torch.Tensor, threads: int) -> int:
        torch.set_num_threads(threads)
        m = CausalVideoTokenizer(TokenizerConfig.from_dict(cfg)).eval()
        m.load_state_dict(state)
        with torch.no_grad():
            for i in range(0, part.shape[0], 4):
                out = m.encode(part[i : i + 4])
                m.decode(out[1] if isinstance(out, tuple) else out)
        return int(part.shape[0] * part.shape[2])

    state, cfg = model.state_dict(), model.config.to_dict()
    parts = list(torch.chunk(clips, workers))
    ray.get([work.remote(state, cfg, p[:2], max(1, cores // workers)) for p in parts])  # warm-up
    t0 = time.perf_counter()
    frames = sum(ray.get([work.remote(state, cfg, p, max(1, cores // workers)) for p in parts]))
    return frames / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--kind", default="continuous", choices=["continuous", "discrete"])
    args = ap.parse_args()
    episodes = sorted((DATA / "bridge/videos/train").glob("*/rgb.mp4"))
    with tempfile.TemporaryDirectory(prefix="wl-bench-ray-") as tmp:
        settings = StoreSettings(root=Path(tmp) / "store")
        store = make_store(settings)
        keys = []
        for p in episodes:
            key = f"clips/{p.parent.name}/train.mp4"
            store.put_bytes(key, p.read_bytes())
            keys.append(key)
        rows = [train_throughput(settings, keys, w, args) for w in (1, 2)]
        videos = load_clip_tensors(store, keys, 64)
        enc = {w: encode_throughput(videos, w, args.kind) for w in (1, 2)}
    print(f"\n{len(episodes)} Bridge train episodes, tiny {args.kind} 4x8x8 tokenizer, 64x64, 17 frames, "
          f"batch {args.batch}/worker, {args.steps} steps, {os.cpu_count()} cores\n")
    print("| Ray workers | sec/step | train clips/s | train frames/s | enc+dec frames/s | job wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['sec_per_step']:.3f} | {r['clips_per_s']:.2f} | {r['frames_per_s']:.1f} | "
              f"{enc[r['workers']]:.1f} | {r['wall_s']:.0f} |")
    print(f"\nscaling 2 vs 1 workers: training {rows[1]['clips_per_s'] / rows[0]['clips_per_s']:.2f}x, "
          f"encode+decode {enc[2] / enc[1]:.2f}x")


if __name__ == "__main__":
    main()
