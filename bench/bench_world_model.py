"""World models on simulator episodes: quality vs copy-last-frame, training throughput, sampling speed.

1. Records random-policy Pendulum-v1 episodes headless (64x64, actions kept), writes them the way the
   platform does (clip records, train renditions, actions next to the raw video), encodes them with the
   tokenizers the tokenizer bench trained (out/bench/tokenizers/{discrete,continuous}_4x8x8_64.safetensors)
   into token shards, then trains both families through the real job path (``run_job``, in-process) for
   a wall-clock budget and prints PSNR, foreground PSNR and SSIM by horizon on held-out episodes next to
   copy-last-frame, and the action gain (PSNR with the true minus shuffled actions; both as the job measures
   them, see ``worldloom.models.world.evaluation``).
2. Training throughput with 1 vs 2 Ray Train workers (tokens/s or latent frames/s, steady state).
3. AR sampling with vs without the KV cache; diffusion quality at 4, 10 and 30 sampling steps.

    .venv/bin/python bench/bench_world_model.py [--minutes 8] [--episodes 24] [--skip-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save as save_safetensors

from worldloom.core.catalog import TRAIN_RENDITION, ClipRecord, clip_meta_key
from worldloom.core.jobs import read_progress, store_settings_payload
from worldloom.core.settings import StoreSettings
from worldloom.core.store.factory import make_store
from worldloom.models.frames import fit_frames
from worldloom.models.tokenizer import load_checkpoint
from worldloom.models.tokenizer.data import frames_to_tensor
from worldloom.models.tokenizer.shards import write_shard
from worldloom.models.training import ScalingSpec
from worldloom.models.world import ActionSpec, Sampling, family_class, load_world_checkpoint
from worldloom.models.world.data import load_sequences
from worldloom.models.world.evaluation import evaluate_prediction
from worldloom.models.world.job import WorldModelJob, model_key, run_job
from worldloom.video.mp4_writer import frames_to_mp4

ENV = "Pendulum-v1"
HORIZONS = [1, 4, 8]
CONTEXT = 2  # latent frames given (video frames 0-4): enough to see the pendulum's velocity, for both families
OPTIONS = {"ar_head": "factorized"}  # set from the command line (--ar-head)
#: training settings per family: window (latent frames), batch, learning rate, family-only options
WINDOW = {"ar": CONTEXT + max(HORIZONS), "diffusion": 3}
BATCH = {"ar": 8, "diffusion": 16}
LR = {"ar": 1e-3, "diffusion": 5e-4}
FAMILY_OPTIONS = {"ar": OPTIONS, "diffusion": {}}


def record(episodes: int, res: int, frames: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gymnasium as gym

    env = gym.make(ENV, render_mode="rgb_array")
    env.action_space.seed(seed)
    out = []
    for e in range(episodes):
        env.reset(seed=seed + e)
        imgs, acts = [env.render()], []
        while len(imgs) < frames:
            a = env.action_space.sample()
            env.step(a)
            acts.append(np.asarray(a, np.float32).reshape(-1))
            imgs.append(env.render())
        out.append((fit_frames(np.stack(imgs), (res, res)), np.stack(acts)))
    env.close()
    return out


def stage(store, tmp: Path, eps: list[tuple[np.ndarray, np.ndarray]], tokenizers: dict[str, Path]) -> dict[str, str]:
    ids = {}
    models = {}
    for kind, path in tokenizers.items():
        model, _ = load_checkpoint(path)
        tid = f"bench-{kind}"
        for f in (path, path.with_suffix(".json")):
            if f.exists():
                store.put_bytes(f"tokenizers/{tid}/model/tokenizer{f.suffix if f.suffix == '.json' else '.safetensors'}",
                                f.read_bytes())
        ids[kind], models[kind] = tid, model.eval()
    for i, (frames, actions) in enumerate(eps):
        cid, vid = f"ep{i:03d}", f"vid{i:03d}"
        mp4 = frames_to_mp4(frames, tmp / f"{cid}.mp4", fps=30)
        key = f"clips/{cid}/{TRAIN_RENDITION}"
        store.put_bytes(key, mp4.read_bytes())
        rec = ClipRecord(clip_id=cid, video_id=vid, source=ENV, status="accepted", start_frame=0,
                         end_frame=len(frames), start_s=0, end_s=len(frames) / 30, duration_s=len(frames) / 30,
                         fps=30, width=frames.shape[2], height=frames.shape[1], renditions={TRAIN_RENDITION: key},
                         config_hash="bench", created_at=datetime.now(timezone.utc))
        store.put_bytes(clip_meta_key(cid), rec.model_dump_json().encode())
        store.put_bytes(f"raw/{vid}/actions.safetensors", save_safetensors({"actions": actions}))
        store.put_bytes(f"raw/{vid}/actions.json", json.dumps({"action_space": {"type": "Box", "shape": [1]}}).encode())
        video = frames_to_tensor(frames)[None]
        with torch.no_grad():
            for kind, model in models.items():
                out = model.encode(video)
                array = out[1][0].numpy() if kind == "discrete" else out[0].numpy()
                meta = {"clip_id": cid, "video_id": vid, "kind": kind, "compression": model.config.compression,
                        "frames": len(frames), "resolution": frames.shape[1]}
                store.put_bytes(f"tokens/{ids[kind]}/{cid}.tar", write_shard(cid, kind, array, meta))
    return ids


def model_config(family: str, store, tid: str, key: str) -> dict:
    from worldloom.models.tokenizer.job import load_tokenizer
    from worldloom.models.tokenizer.shards import read_shard

    array, _, _ = read_shard(store.get_bytes(key))
    return family_class(family).config_for_data(
        load_tokenizer(store, tid).config, array.shape, size="tiny", action=ActionSpec.continuous(1), reward_head=False,
        window=WINDOW[family], context_frames=CONTEXT, horizon=max(HORIZONS),
        options=FAMILY_OPTIONS[family]).to_dict()


def make_job(family: str, settings: StoreSettings, tid: str, train: list[str], val: list[str], store, steps: int,
             prefix: str, horizons: list[int]) -> WorldModelJob:
    return WorldModelJob(prefix=prefix, store=store_settings_payload(settings), family=family,
                         model=model_config(family, store, tid, train[0]), tokenizer_id=tid, train_keys=train,
                         val_keys=val, window=WINDOW[family], context_frames=CONTEXT, batch=BATCH[family],
                         steps=steps, lr=LR[family], checkpoint_every=10**6, log_every=10,
                         eval_horizons=horizons, eval_sequences=8, eval_steps=10, threads_per_worker=2)


def quality(family: str, settings, store, tid, train, val, minutes: float) -> dict:
    probe = make_job(family, settings, tid, train, val, store, 12, f"bench/{family}-probe", [])
    t0 = time.perf_counter()
    run_job(probe, ScalingSpec(cpus_per_worker=2), name="probe", in_process=True)
    sps = statistics.median(v for _, v in read_progress(store, probe.prefix).curves["sec_per_step"])
    steps = max(20, int(minutes * 60 / sps))
    job = make_job(family, settings, tid, train, val, store, steps, f"bench/{family}", HORIZONS)
    t0 = time.perf_counter()
    run_job(job, ScalingSpec(cpus_per_worker=2), name=family, in_process=True)
    progress = read_progress(store, job.prefix)
    return {"steps": steps, "minutes": (time.perf_counter() - t0) / 60, "metrics": progress.metrics,
            "final_loss": progress.curves["loss"][-1][1], "prefix": job.prefix}


def ray_throughput(family: str, settings, store, tid, train, workers: int, steps: int) -> float:
    cores = os.cpu_count() or 1
    job = make_job(family, settings, tid, train, [], store, steps, f"bench/{family}-ray{workers}", [])
    job.threads_per_worker = max(1, cores // workers)
    run_job(job, ScalingSpec(num_workers=workers, cpus_per_worker=max(1, cores // workers)), name=job.prefix.replace("/", "-"))
    curves = read_progress(store, job.prefix).curves
    return statistics.median(v for _, v in curves[family_class(family).throughput_unit][1:])


def serve_latency(store, settings: StoreSettings, prefixes: dict[str, tuple[str, str]], context: np.ndarray,
                  requests: int) -> dict[str, dict[str, float]]:
    """p50/p99 latency and frames/s for 16 predicted 64x64 frames through the real KServe model server.

    The trained models are registered (models/<id>/...) and served by ``python -m worldloom.generate`` on
    127.0.0.1; requests are sequential v2 JSON calls with a fixed seed."""
    import shutil
    import socket
    import subprocess
    import sys

    import httpx

    from worldloom.models.world.registry import WorldModelLineage, WorldModelRecord, WorldModelRegistry

    registry = WorldModelRegistry(store)
    for family, (prefix, tid) in prefixes.items():
        for name in ("world_model.safetensors", "world_model.json"):
            store.put_bytes(f"models/bench-{family}/model/{name}", store.get_bytes(f"{prefix}/model/{name}"))
        registry.save(WorldModelRecord(model_id=f"bench-{family}", name=family, family=family, config={},
                                       state="succeeded", lineage=WorldModelLineage(tokenizer_id=tid)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "WORLDLOOM_GENERATE_MODEL_IDS": ",".join(f"bench-{f}" for f in prefixes),
           "WORLDLOOM_GENERATE_HTTP__HOST": "127.0.0.1", "WORLDLOOM_GENERATE_HTTP__PORT": str(port),
           "WORLDLOOM_GENERATE_HTTP__AUTH_REQUIRED": "false", "WORLDLOOM_GENERATE_STORE__ROOT": str(settings.root),
           "WORLDLOOM_GENERATE_DEVICE": "cpu", "WORLDLOOM_GENERATE_TORCH_THREADS": str(os.cpu_count() or 1),
           "WORLDLOOM_GENERATE_PRELOAD_TEXT_EMBEDDER": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "worldloom.generate"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    out: dict[str, dict[str, float]] = {}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        body = {"inputs": [{"name": "context_frames", "datatype": "UINT8", "shape": list(context.shape),
                            "data": context.ravel().tolist()}],
                "parameters": {"num_frames": 16, "seed": 0}}
        for family in prefixes:
            lat = []
            for i in range(requests + 1):
                t0 = time.perf_counter()
                r = httpx.post(f"{url}/v2/models/bench-{family}/infer", json=body, timeout=600)
                r.raise_for_status()
                if i:  # the first request warms up
                    lat.append(time.perf_counter() - t0)
            lat.sort()
            p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
            out[family] = {"p50_s": p50, "p99_s": p99, "frames_per_s": 16 / statistics.mean(lat), "requests": len(lat)}
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(Path(settings.root) / "models", ignore_errors=True)
    return out


def _download_model(store, prefix: str, tmp: Path):
    local = tmp / "wm.safetensors"
    store.download(model_key(prefix), str(local))
    store.download(model_key(prefix).replace(".safetensors", ".json"), str(local.with_suffix(".json")))
    return load_world_checkpoint(local)[0].eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget per family")
    ap.add_argument("--episodes", type=int, default=24)
    ap.add_argument("--val-episodes", type=int, default=6)
    ap.add_argument("--frames", type=int, default=97)
    ap.add_argument("--tokenizers", type=Path, default=Path("out/bench/tokenizers"))
    ap.add_argument("--ray-steps", type=int, default=30)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--requests", type=int, default=10, help="timed generate-server requests per family")
    ap.add_argument("--ar-head", choices=("factorized", "joint"), default=OPTIONS["ar_head"],
                    help="AR output head: one softmax per FSQ digit, or one over the whole codebook")
    ap.add_argument("--out", type=Path, default=Path("out/bench/world_model.json"))
    args = ap.parse_args()
    OPTIONS["ar_head"] = args.ar_head
    torch.set_num_threads(os.cpu_count() or 1)
    toks = {"discrete": args.tokenizers / "discrete_4x8x8_64.safetensors",
            "continuous": args.tokenizers / "continuous_4x8x8_64.safetensors"}
    missing = [str(p) for p in toks.values() if not p.exists()]
    if missing:
        raise SystemExit(f"tokenizer checkpoints missing: {missing}; run bench/bench_tokenizer.py first")
    results: dict = {"ar_head": args.ar_head, "env": ENV, "episodes": args.episodes, "val_episodes": args.val_episodes, "frames": args.frames}
    with tempfile.TemporaryDirectory(prefix="wl-bench-wm-") as tmpd:
        tmp = Path(tmpd)
        settings = StoreSettings(root=tmp / "store")
        store = make_store(settings)
        eps = record(args.episodes + args.val_episodes, 64, args.frames, seed=0)
        ids = stage(store, tmp, eps, toks)
        names = [f"ep{i:03d}" for i in range(len(eps))]
        split = {"train": names[: args.episodes], "val": names[args.episodes:]}
        for family, kind in (("ar", "discrete"), ("diffusion", "continuous")):
            tid = ids[kind]
            train = [f"tokens/{tid}/{c}.tar" for c in split["train"]]
            val = [f"tokens/{tid}/{c}.tar" for c in split["val"]]
            print(f"\n## {family}: training for {args.minutes} min on {len(train)} episodes", flush=True)
            q = quality(family, settings, store, tid, train, val, args.minutes)
            results[family] = q
            model = _download_model(store, q["prefix"], tmp)
            from worldloom.models.tokenizer.job import load_tokenizer

            tokenizer = load_tokenizer(store, tid)
            seqs = load_sequences(store, val, actions="mean")
            q.update(FAMILY_BENCH[family](model, tokenizer, seqs, args.val_episodes))
            if not args.skip_ray:
                q["ray"] = {w: ray_throughput(family, settings, store, tid, train, w, args.ray_steps) for w in (1, 2)}
        ctx = eps[args.episodes][0][:5]
        results["serve"] = serve_latency(store, settings, {f: (results[f]["prefix"], ids[k]) for f, k in
                                                           (("ar", "discrete"), ("diffusion", "continuous"))},
                                         ctx, args.requests)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str))
    _print(results)


def kv_cache_speed(model, tokenizer, seqs, val_episodes: int) -> dict:
    """AR sampling of max(HORIZONS) latent frames with vs without the KV cache."""
    n = max(HORIZONS)
    ctx = torch.stack([s.data[:CONTEXT] for s in seqs[:2]])
    acts = torch.stack([s.actions[:CONTEXT + n - 1] for s in seqs[:2]]) if seqs[0].actions is not None else None
    timing = {}
    for cache in (True, False):
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        model.generate(ctx, n, actions=acts, temperature=1.0, generator=g, use_kv_cache=cache)
        timing[cache] = time.perf_counter() - t0
    return {"kv_cache_s": timing[True], "no_cache_s": timing[False], "kv_speedup": timing[False] / timing[True]}


def steps_quality(model, tokenizer, seqs, val_episodes: int) -> dict:
    """Diffusion prediction PSNR (vs decoded) at 4, 10 and 30 sampling steps."""
    out = {}
    for steps in (4, 10, 30):
        r = evaluate_prediction(model, tokenizer, seqs, context_frames=CONTEXT, horizons=HORIZONS,
                                sampling=Sampling(steps=steps), seed=0, max_sequences=val_episodes)
        out[steps] = {h: r["model"][h]["psnr_vs_decoded"] for h in HORIZONS}
    return {"steps_quality": out}


#: what only one family has: the AR model's KV cache, the diffusion model's sampling steps
FAMILY_BENCH = {"ar": kv_cache_speed, "diffusion": steps_quality}
UNIT = {"ar": "tokens/s", "diffusion": "latent frames/s"}


def _print(results: dict) -> None:
    print(f"\n{ENV}: {results['episodes']} training / {results['val_episodes']} held-out random-policy episodes, "
          f"{results['frames']} frames at 64x64, tiny models, 4x8x8 tokenizers\n")
    print("| family | steps | train min | horizon (latent) | video frames | model PSNR | copy-last PSNR | "
          "model fg PSNR | copy-last fg PSNR | model SSIM | copy-last SSIM | action gain dB | beats copy-last |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def cell(v: float | None, fmt: str = ".2f") -> str:
        return "-" if v is None else format(v, fmt)  # "-": the job did not measure it
    for family in ("ar", "diffusion"):
        q, m = results[family], results[family]["metrics"]
        c = CONTEXT
        for h in HORIZONS:
            mp, cp = m.get(f"val_model_h{h}_psnr_vs_real"), m.get(f"val_copy_last_h{h}_psnr_vs_real")
            ms, cs = m.get(f"val_model_h{h}_ssim_vs_real"), m.get(f"val_copy_last_h{h}_ssim_vs_real")
            mf, cf = m.get(f"val_model_h{h}_fg_psnr_vs_real"), m.get(f"val_copy_last_h{h}_fg_psnr_vs_real")
            lo, hi = (c + h - 2) * 4 + 1, (c + h - 1) * 4
            print(f"| {family} | {q['steps']} | {q['minutes']:.1f} | {h} | {lo}-{hi} | {mp:.2f} | {cp:.2f} | "
                  f"{cell(mf)} | {cell(cf)} | {ms:.3f} | {cs:.3f} | "
                  f"{cell(m.get(f'val_model_h{h}_action_gain_db'), '+.2f')} | {'yes' if mp > cp else 'no'} |")
    ar = results["ar"]
    print(f"\nAR ({results.get('ar_head', 'joint')} head) sampling of {max(HORIZONS)} latent frames after "
          f"{CONTEXT} (batch 2): KV cache {ar['kv_cache_s']:.2f} s, recompute "
          f"{ar['no_cache_s']:.2f} s -> {ar['kv_speedup']:.1f}x")
    sq = results["diffusion"]["steps_quality"]
    print("diffusion PSNR (vs decoded) by sampling steps: " + "; ".join(
        f"{s} steps: " + ", ".join(f"h{h} {v:.2f}" for h, v in hs.items()) for s, hs in sq.items()))
    for family, v in results.get("serve", {}).items():
        print(f"{family} through the model server, 16 frames at 64x64 from 5 context frames: p50 {v['p50_s']:.2f} s, "
              f"p99 {v['p99_s']:.2f} s, {v['frames_per_s']:.1f} frames/s ({v['requests']} requests)")
    for family in ("ar", "diffusion"):
        ray = results[family].get("ray")
        if ray:
            print(f"{family} training throughput: 1 worker {ray[1]:.0f} {UNIT[family]}, 2 workers {ray[2]:.0f} -> "
                  f"{ray[2] / ray[1]:.2f}x")


if __name__ == "__main__":
    main()
