"""Tokenizer measurements, not tests: CPU speed of the presets, and a short Bridge sanity run.

    .venv/bin/python bench/bench_tokenizer_quick.py speed
    .venv/bin/python bench/bench_tokenizer_quick.py bridge --kind continuous --minutes 5
    .venv/bin/python bench/bench_tokenizer_quick.py motion --kind continuous --steps 150 --motion-weight 4

``bridge`` trains on ``<data>/videos/train/*/rgb.mp4`` downscaled to 64x64 and reports PSNR/SSIM on
``<data>/videos/val/*`` (each whole val video, trimmed to ``1 + k*t_compression`` frames, encoded and
decoded in one go). ``motion`` trains the same tokenizer twice on random-policy Pendulum and CartPole
episodes, with and without the loss's motion weighting (same seed, steps and batches), and prints PSNR and
foreground PSNR on held-out episodes for both, and the difference in dB. The held-out benchmark against JPEG is ``bench/bench_tokenizer.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from benchlib.tokenizer import codec_fps, median_time

from worldloom.models.tokenizer.checkpoint import save_checkpoint
from worldloom.models.tokenizer.data import ClipSampler, frames_to_tensor, moving_pattern_videos
from worldloom.models.tokenizer.model import CausalVideoTokenizer, TokenizerConfig
from worldloom.models.tokenizer.train import fit, train_step


def bench_speed(size: str = "tiny", kind: str = "continuous", compression: str = "4x8x8", res: int = 64,
                batch: int = 4, frames: int = 17, reps: int = 7, **overrides: object) -> dict[str, float]:
    """Seconds per training step (``batch x frames x res x res``) and encode/decode frames per second."""
    model = CausalVideoTokenizer.from_preset(size, kind, compression, **overrides)  # type: ignore[arg-type]
    video = moving_pattern_videos(batch, frames, res)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_step(model, video, opt)  # warm-up (allocator, oneDNN kernel selection)
    step_s = median_time(lambda: train_step(model, video, opt), reps)
    return {"params": float(model.num_parameters()), "sec_per_train_step": step_s, **codec_fps(model, video, reps)}


def load_videos(root: Path, res: int) -> list[torch.Tensor]:
    from worldloom.video.decode import read_frames

    return [frames_to_tensor(read_frames(p, size=(res, res))[0]) for p in sorted(root.glob("*/rgb.mp4"))]


@torch.no_grad()
def evaluate(model: CausalVideoTokenizer, videos: list[torch.Tensor]) -> dict[str, float]:
    """Mean per-clip PSNR/SSIM over whole videos (trimmed to a valid length), plus code usage if discrete."""
    from worldloom.models.tokenizer.job import evaluate_clips

    out = evaluate_clips(model, videos, max_frames=max(v.shape[1] for v in videos))
    return {f"val_{k}": v for k, v in out.items() if k != "clips"}


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


def motion(kind: str, steps: int, weight: float, size: str = "tiny", res: int = 64, batch: int = 4,
           frames: int = 17, lr: float = 1e-3, episodes: int = 6) -> dict[str, object]:
    """A/B of ``LossConfig.motion_weight`` (0 vs ``weight``) on simulator episodes, held out by episode."""
    from benchlib.tokenizer import evaluate_foreground, heldout_sim_clips, simulator_episodes

    from worldloom.models.tokenizer.losses import LossConfig

    train = [frames_to_tensor(v) for i, env in enumerate(("Pendulum-v1", "CartPole-v1"))
             for v in simulator_episodes(env, episodes, res, seed=1000 * i)]
    heldout = heldout_sim_clips(res)
    out: dict[str, object] = {"train_videos": len(train), "steps": steps, "kind": kind}
    for w in (0.0, weight):
        torch.manual_seed(0)
        model = CausalVideoTokenizer(TokenizerConfig.preset(size, kind, "4x8x8"))  # type: ignore[arg-type]
        sampler = ClipSampler(train, frames, batch, num_images=0, seed=0)
        t0 = time.perf_counter()
        fit(model, sampler, steps, lr=lr, log_every=max(1, steps // 5), loss_cfg=LossConfig(motion_weight=w))
        scores = evaluate_foreground(model, heldout, jpeg=False)
        out[f"motion_weight={w:g}"] = {env: {k: round(float(v), 2) for k, v in row.items()
                                             if k in ("psnr", "fg_psnr") and v is not None}
                                       for env, row in scores.items()} | {"train_s": round(time.perf_counter() - t0)}
    base, new = out["motion_weight=0"], out[f"motion_weight={weight:g}"]
    assert isinstance(base, dict) and isinstance(new, dict)
    out["fg_psnr_gain_db"] = {env: round(new[env]["fg_psnr"] - base[env]["fg_psnr"], 2) for env in heldout}
    out["psnr_gain_db"] = {env: round(new[env]["psnr"] - base[env]["psnr"], 2) for env in heldout}
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "bridge", "motion"])
    ap.add_argument("--motion-weight", type=float, default=4.0, help="motion: the weight compared with 0")
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
    elif args.what == "motion":
        motion(args.kind, args.steps or 150, args.motion_weight, size=args.size, batch=args.batch, lr=args.lr)
    else:
        bridge(args.data, args.kind, args.minutes, size=args.size, batch=args.batch, lr=args.lr,
               eval_every=args.eval_every, out=args.out, steps=args.steps, augment=args.augment)


if __name__ == "__main__":
    main()
