"""Measurements, not tests: CPU speed of the tiny model, and a short real-data (Bridge) training sanity run.

    python -m worldloom.models.tokenizer.bench speed
    python -m worldloom.models.tokenizer.bench bridge --kind continuous --minutes 5

``bridge`` needs ``worldloom-video`` (PyAV) to decode the mp4 files; it trains on
``<data>/videos/train/*/rgb.mp4`` downscaled to 64x64 and reports PSNR/SSIM on ``<data>/videos/val/*``
(each whole val video, trimmed to ``1 + k*t_compression`` frames, encoded and decoded in one go).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from worldloom.models.tokenizer.checkpoint import save_checkpoint
from worldloom.models.tokenizer.data import ClipSampler, frames_to_tensor, moving_pattern_videos
from worldloom.models.tokenizer.metrics import codebook_usage, psnr, ssim
from worldloom.models.tokenizer.model import CausalVideoTokenizer, TokenizerConfig
from worldloom.models.tokenizer.train import fit, train_step


def _median_time(fn: Callable[[], object], reps: int) -> float:
    """Median wall time: robust to the multi-second stalls other processes cause on a shared 2-core box."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_speed(size: str = "tiny", kind: str = "continuous", compression: str = "4x8x8", res: int = 64,
                batch: int = 4, frames: int = 17, reps: int = 7, **overrides: object) -> dict[str, float]:
    """Seconds per training step (``batch x frames x res x res``) and encode/decode frames per second."""
    model = CausalVideoTokenizer.from_preset(size, kind, compression, **overrides)  # type: ignore[arg-type]
    video = moving_pattern_videos(batch, frames, res)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_step(model, video, opt)  # warm-up (allocator, oneDNN kernel selection)
    step_s = _median_time(lambda: train_step(model, video, opt), reps)
    model.eval()
    with torch.no_grad():
        z = model.encode(video)
        tokens = z if isinstance(z, torch.Tensor) else z[1]
        model.decode(tokens)
        enc_s = _median_time(lambda: model.encode(video), reps)
        dec_s = _median_time(lambda: model.decode(tokens), reps)
    n = batch * frames
    return {"params": float(model.num_parameters()), "sec_per_train_step": step_s,
            "encode_fps": n / enc_s, "decode_fps": n / dec_s}


def load_videos(root: Path, res: int) -> list[torch.Tensor]:
    from worldloom.video.decode import read_frames  # optional dependency: only this script decodes mp4

    return [frames_to_tensor(read_frames(p, size=(res, res))[0]) for p in sorted(root.glob("*/rgb.mp4"))]


@torch.no_grad()
def evaluate(model: CausalVideoTokenizer, videos: list[torch.Tensor]) -> dict[str, float]:
    """Mean per-clip PSNR/SSIM over whole videos (trimmed to a valid length), plus code usage if discrete."""
    model.eval()
    tc = model.config.t_compression
    p, s, idx = [], [], []
    for v in videos:
        t = 1 + (v.shape[1] - 1) // tc * tc
        clip = v[None, :, :t]
        recon, aux = model(clip)
        p.append(float(psnr(recon, clip)[0]))
        s.append(float(ssim(recon, clip)[0]))
        if "indices" in aux:
            idx.append(aux["indices"].flatten())
    out = {"val_psnr": sum(p) / len(p), "val_ssim": sum(s) / len(s)}
    if idx and model.fsq is not None:
        out.update({f"val_code_{k}": v for k, v in codebook_usage(torch.cat(idx), model.fsq.codebook_size).items()})
    return out


def bridge(data: Path, kind: str, minutes: float, size: str = "tiny", res: int = 64, batch: int = 4,
           frames: int = 17, num_images: int = 4, lr: float = 1e-3, eval_every: int = 200,
           out: Path | None = None, steps: int | None = None, augment: bool = False) -> list[dict[str, float]]:
    """Train on Bridge train videos for about ``minutes`` of (uncontended) wall time, or exactly ``steps``
    steps; log val metrics every ``eval_every`` steps."""
    train_res = res * 9 // 8 if augment else res  # random res x res crops of slightly larger frames
    train_v, val_v = load_videos(data / "videos/train", train_res), load_videos(data / "videos/val", res)
    model = CausalVideoTokenizer(TokenizerConfig.preset(size, kind, "4x8x8"))  # type: ignore[arg-type]
    sampler = ClipSampler(train_v, frames, batch, num_images=num_images, crop=res if augment else None,
                          reverse=augment)
    probe = torch.optim.AdamW(model.parameters(), lr=0.0)
    train_step(model, next(sampler), probe)
    t0 = time.perf_counter()
    for _ in range(3):
        train_step(model, next(sampler), probe)
    if steps is None:
        steps = max(10, int(minutes * 60 / ((time.perf_counter() - t0) / 3)))
    del probe
    model = CausalVideoTokenizer(model.config)  # fresh weights: the probe's Adam steps were lr=0 but reset anyway
    print(json.dumps({"params": model.num_parameters(), "planned_steps": steps, "train_videos": len(train_v),
                      "train_frames": sum(v.shape[1] for v in train_v), "val_videos": len(val_v)}), flush=True)
    history: list[dict[str, float]] = []
    start = time.perf_counter()

    def on_log(entry: dict[str, float]) -> None:
        if int(entry["step"]) % eval_every == 0 or int(entry["step"]) == steps:
            entry.update(evaluate(model, val_v), minutes=(time.perf_counter() - start) / 60)
            history.append(entry)
            print(json.dumps({k: round(v, 4) for k, v in entry.items()}), flush=True)

    fit(model, sampler, steps, lr=lr, log_every=50, on_log=on_log)
    if out is not None:
        save_checkpoint(out, model, step=steps, extra={"history": history})
    return history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "bridge"])
    ap.add_argument("--kind", default="continuous", choices=["continuous", "discrete"])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=None, help="train exactly this many steps (overrides --minutes)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--augment", action="store_true", help="random crops and time reversal (small datasets)")
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/bridge"))
    ap.add_argument("--out", type=Path, default=None, help="save a checkpoint here (.safetensors)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.what == "speed":
        for kind in ("continuous", "discrete"):
            print(kind, json.dumps(bench_speed(args.size, kind)), flush=True)
    else:
        bridge(args.data, args.kind, args.minutes, size=args.size, batch=args.batch, lr=args.lr,
               eval_every=args.eval_every, out=args.out, steps=args.steps, augment=args.augment)


if __name__ == "__main__":
    main()
