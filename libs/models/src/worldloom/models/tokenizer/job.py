"""A tokenizer training job: the per-worker loop Ray Train runs, and the driver that launches it.

The loop reads clips from the object store, trains with :func:`~.train.train_step` under DDP (gloo
on CPU, NCCL on GPU), reports progress (``progress.json``) and saves safetensors checkpoints to the
store every ``checkpoint_every`` steps. Started again after a crash (Ray's ``FailureConfig`` restarts
the worker group) it resumes from the last checkpoint with the same data order (the sampler is seeded
from the seed, the rank and the resume step). When it finishes, rank 0 evaluates PSNR/SSIM on the
held-out clips and writes the final model to ``<prefix>/model/tokenizer.safetensors``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldloom.core.catalog import TOKENIZER_FILE, model_dir, tokenizer_model_key
from worldloom.core.jobs import ProgressWriter
from worldloom.core.store.base import InvalidKey, ObjectNotFound, ObjectStore
from worldloom.models.checkpoint import CheckpointError, StoreCheckpoints, fetch_files, publish_files
from worldloom.models.tokenizer.checkpoint import load_checkpoint, save_checkpoint
from worldloom.models.tokenizer.data import ClipSampler, frames_to_tensor
from worldloom.models.tokenizer.losses import LossConfig
from worldloom.models.tokenizer.metrics import codebook_usage, psnr, ssim
from worldloom.models.tokenizer.model import CausalVideoTokenizer, TokenizerConfig
from worldloom.models.tokenizer.train import train_step
from worldloom.models.training import ScalingSpec
from worldloom.models.training.optim import set_lr
from worldloom.models.training.worker import JobCancelled, broadcast_flag, gather_pids, launch, run_worker

MODEL_FILE = TOKENIZER_FILE


def model_key(prefix: str) -> str:
    """The finished tokenizer of the job under ``prefix`` (see :func:`worldloom.core.catalog.tokenizer_model_key`)."""
    return f"{model_dir(prefix)}/{MODEL_FILE}"


class CheckpointMissing(CheckpointError):
    """The tokenizer's model file is not in the store (never trained to the end, or deleted)."""


def load_tokenizer(store: ObjectStore, tokenizer_id: str, device: str = "cpu") -> CausalVideoTokenizer:
    """A finished tokenizer from ``tokenizers/<id>/model/`` in eval mode; safetensors only, never unpickled.

    Raises :class:`CheckpointMissing` when the file is absent and :class:`CheckpointError` when it is corrupt.
    """
    key = tokenizer_model_key(tokenizer_id)
    with tempfile.TemporaryDirectory(prefix="wl-tok-") as tmp:
        try:  # the sidecar is optional: the config is in the weights' metadata too
            local = fetch_files(store, key, Path(tmp), sidecar=False)
        except (ObjectNotFound, InvalidKey):
            raise CheckpointMissing(f"tokenizer {tokenizer_id!r} has no model file {key} in the store") from None
        model, _ = load_checkpoint(local, device=device)
    return model.eval()


@dataclass
class TokenizerJob:
    """Everything a worker needs; plain data so it crosses process and machine boundaries."""

    prefix: str  # tokenizers/<id> (catalog.tokenizer_prefix): progress, checkpoints and the final model live under it
    store: dict[str, Any]  # StoreSettings payload (see worldloom.core.jobs.store_settings_payload)
    tokenizer: dict[str, Any]  # TokenizerConfig.to_dict()
    train_keys: list[str]  # object keys of training clips (mp4)
    val_keys: list[str] = field(default_factory=list)
    resolution: int = 64
    frames: int = 17
    batch: int = 4
    num_images: int = 2
    steps: int = 500
    lr: float = 1e-3
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    augment: bool = True
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        cfg = TokenizerConfig.from_dict(self.tokenizer)
        if (self.frames - 1) % cfg.t_compression:
            raise ValueError(f"frames must be 1 + k * {cfg.t_compression} for {cfg.compression}, got {self.frames}")
        if self.resolution % cfg.s_compression:
            raise ValueError(f"resolution must be a multiple of {cfg.s_compression}, got {self.resolution}")
        if not self.train_keys:
            raise ValueError("no training clips")
        for name in ("steps", "batch", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_clip_tensors(store: ObjectStore, keys: list[str], size: int) -> list[torch.Tensor]:
    """Decode clips from the store to ``[3, T, size, size]`` tensors in [-1, 1]."""
    from worldloom.video.decode import read_frames

    out = []
    with tempfile.TemporaryDirectory(prefix="wl-clips-") as tmp:
        for i, key in enumerate(keys):
            path = os.path.join(tmp, f"{i}.mp4")
            store.download(key, path)
            frames, _ = read_frames(path, size=(size, size))
            out.append(frames_to_tensor(frames))
            os.unlink(path)
    return out


@torch.no_grad()
def evaluate_clips(model: CausalVideoTokenizer, videos: list[torch.Tensor], max_frames: int = 33) -> dict[str, float]:
    """Mean per-clip PSNR/SSIM (each clip trimmed to a valid causal length), plus FSQ code usage."""
    model.eval()
    tc = model.config.t_compression
    p, s, idx = [], [], []
    for v in videos:
        t = 1 + (min(v.shape[1], max_frames) - 1) // tc * tc
        clip = v[None, :, :t]
        recon, aux = model(clip)
        p.append(float(psnr(recon, clip)[0]))
        s.append(float(ssim(recon, clip)[0]))
        if "indices" in aux:
            idx.append(aux["indices"].flatten())
    out = {"psnr": sum(p) / len(p), "ssim": sum(s) / len(s), "clips": float(len(p))}
    if idx and model.fsq is not None:
        out["code_usage"] = codebook_usage(torch.cat(idx), model.fsq.codebook_size)["usage"]
    return out


def train_loop(config: dict[str, Any]) -> None:
    """Per-worker body (Ray Train calls it on every worker; also runs in-process with one worker)."""
    job = TokenizerJob(**config)
    run_worker(job.store, job.prefix, job.steps, job.threads_per_worker, job.seed,
               lambda env: _train(job, env.info, env.store, env.ckpts, env.writer))


def _train(job: TokenizerJob, info: Any, store: ObjectStore, ckpts: StoreCheckpoints,
           writer: ProgressWriter | None) -> None:
    device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    train_res = job.resolution * 9 // 8 if job.augment else job.resolution
    videos = load_clip_tensors(store, job.train_keys, train_res)
    model = CausalVideoTokenizer(TokenizerConfig.from_dict(job.tokenizer)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.lr, betas=(0.9, 0.99), weight_decay=0.0)
    start = 0
    with tempfile.TemporaryDirectory(prefix="wl-resume-") as tmp:
        if ckpts.restore(Path(tmp)) is not None:
            _, state = load_checkpoint(Path(tmp) / MODEL_FILE, model=model, optimizer=optimizer, device=str(device))
            start = state.step
    trained: nn.Module = model
    if info.world_size > 1:
        import ray.train.torch

        trained = ray.train.torch.prepare_model(model, move_to_device=False)
    pids = gather_pids()
    if writer is not None:
        writer.resumed(start, pids)
    sampler = ClipSampler(videos, job.frames, job.batch, num_images=job.num_images,
                          seed=job.seed * 1_000_003 + info.rank * 7919 + start,
                          crop=job.resolution if job.augment else None, reverse=job.augment)
    loss_cfg = LossConfig()
    window: dict[str, float] = {}
    count, t0 = 0, time.perf_counter()
    for step in range(start, job.steps):
        set_lr(optimizer, step, job.steps, job.lr)
        logs = train_step(trained, next(sampler), optimizer, loss_cfg, step=step)
        for k, v in logs.items():
            window[k] = window.get(k, 0.0) + v
        count += 1
        done = step + 1
        if done % job.log_every == 0 or done == job.steps:
            if writer is not None and all(math.isfinite(v) for v in window.values()):
                entry: dict[str, float] = {k: window[k] / count for k in ("loss", "psnr", "code_usage") if k in window}
                entry["sec_per_step"] = (time.perf_counter() - t0) / count
                writer.log(done, entry)
            window, count, t0 = {}, 0, time.perf_counter()
            if broadcast_flag(writer is not None and writer.cancelled()):
                raise JobCancelled()
        if done % job.checkpoint_every == 0 and done < job.steps and info.rank == 0:
            ckpts.save(done, partial(_write_checkpoint, model, optimizer, done))
    if info.rank != 0 or writer is None:
        return
    val_keys = job.val_keys or job.train_keys[:4]
    metrics = evaluate_clips(model, load_clip_tensors(store, val_keys, job.resolution))
    metrics = {("val_" + k if job.val_keys else "train_" + k): v for k, v in metrics.items()}
    with tempfile.TemporaryDirectory(prefix="wl-final-") as tmp:
        save_checkpoint(Path(tmp) / MODEL_FILE, model, step=job.steps, extra={"metrics": metrics})
        publish_files(store, Path(tmp), model_dir(job.prefix))
    writer.finish("succeeded", metrics)


def _write_checkpoint(model: CausalVideoTokenizer, optimizer: torch.optim.Optimizer, step: int, folder: Path) -> None:
    save_checkpoint(folder / MODEL_FILE, model, optimizer=optimizer, step=step)


def run_job(job: TokenizerJob, scaling: ScalingSpec, *, name: str, address: str | None = None,
            in_process: bool = False) -> None:
    """Train ``job`` on Ray Train (or, with ``in_process``, in this process: tests and tiny runs)."""
    launch(train_loop, job.to_dict(), scaling, name=name, address=address, in_process=in_process)
