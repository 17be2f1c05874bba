"""World-model pretraining job: the per-worker loop Ray Train runs, and the driver that launches it.

Mirrors :mod:`worldloom.models.tokenizer.job`. The loop reads token/latent shards
(``tokens/<tokenizer_id>/<clip_id>.tar``) from the object store (:mod:`.data`), trains an
:class:`~.autoregressive.ARWorldModel` (family ``"ar"``: next-token cross-entropy on frames after the first
``context_frames`` of each window) or a :class:`~.diffusion.DiffusionWorldModel` (family ``"diffusion"``:
flow matching of the last ``window - context_frames`` frames given the first ``context_frames``) under DDP
(gloo on CPU, NCCL on GPU), reports progress (``<prefix>/progress.json``: loss, ``tokens_per_s`` or
``latent_frames_per_s`` over all workers) and saves safetensors checkpoints (model + AdamW state, no
pickle) to the store every ``checkpoint_every`` steps. Restarted, it resumes from the last checkpoint with
the same data order (batch ``n`` depends only on seed, rank and ``n``; diffusion noise likewise). A
``<prefix>/cancel`` marker stops it. When it finishes rank 0 computes the teacher-forced validation loss
and, with a tokenizer, prediction quality per horizon next to the copy-last baseline
(:mod:`.evaluation`), and writes ``<prefix>/model/world_model.safetensors`` + ``world_model.json``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from worldloom.core.catalog import TRAIN_RENDITION, WORLD_MODEL_FILE, ClipRecord, clip_meta_key, model_dir
from worldloom.core.jobs import ProgressWriter
from worldloom.core.store.base import ObjectStore
from worldloom.models.checkpoint import StoreCheckpoints, publish_files
from worldloom.models.training import ScalingSpec
from worldloom.models.training.optim import autocast_for, set_lr
from worldloom.models.training.worker import JobCancelled, broadcast_flag, gather_pids, launch, run_worker
from worldloom.models.world.base import Sampling, WorldModel, training_outputs
from worldloom.models.world.data import LatentSequence, Pool, WindowSampler, batch_seed, load_sequences
from worldloom.models.world.evaluation import DEFAULT_HORIZONS, evaluate_prediction, flat_metrics
from worldloom.models.world.factory import (
    build_model,
    family_class,
    load_world_checkpoint,
    model_config,
    save_world_checkpoint,
)

log = logging.getLogger("worldloom.models.world.job")

MODEL_FILE = WORLD_MODEL_FILE


def model_key(prefix: str) -> str:
    """The finished model of the job under ``prefix`` (see :func:`worldloom.core.catalog.world_model_key`)."""
    return f"{model_dir(prefix)}/{MODEL_FILE}"


# ---------------------------------------------------------------------------------------------- the job


@dataclass
class WorldModelJob:
    """Everything a worker needs; plain data so it crosses process and machine boundaries."""

    prefix: str  # models/<id> (catalog.world_model_prefix): progress, checkpoints and the final model live under it
    store: dict[str, Any]  # StoreSettings payload (worldloom.core.jobs.store_settings_payload)
    family: str  # "ar" | "diffusion"
    model: dict[str, Any]  # the family's config as a dict (see .factory.model_config)
    tokenizer_id: str  # the tokenizer that made the shards (decodes predictions for evaluation)
    train_keys: list[str]  # shard keys tokens/<tokenizer_id>/<clip_id>.tar
    val_keys: list[str] = field(default_factory=list)
    window: int = 4  # latent frames per training window
    context_frames: int = 1  # AR: frames without loss; diffusion: clean context frames (rest is the target)
    batch: int = 8
    steps: int = 1000
    lr: float = 3e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    eval_horizons: list[int] = field(default_factory=lambda: list(DEFAULT_HORIZONS))  # latent frames; [] = off
    eval_sequences: int = 8
    eval_steps: int = 10  # diffusion sampling steps
    eval_real_frames: bool = True  # also compare with the clips' real frames when their rendition exists
    threads_per_worker: int = 1
    #: condition on each clip's caption (MiniLM embedding, one prefix token / adaLN input per clip)
    text: bool = False
    #: train the reward / termination heads on the episodes' recorded rewards (the model needs reward_head)
    rewards: bool = False

    def __post_init__(self) -> None:
        cfg = model_config(self.family, self.model)
        if not self.train_keys:
            raise ValueError("no training shards")
        if not self.tokenizer_id:
            raise ValueError("tokenizer_id is required")
        if self.rewards and not cfg.reward_head:
            raise ValueError("rewards=True but the model has no reward head (config reward_head is False)")
        if self.text and cfg.text_dim is None:
            raise ValueError("text=True but the model has no text conditioning (config text_dim is None)")
        for name in ("steps", "batch", "checkpoint_every", "log_every", "eval_steps", "eval_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0, weight_decay and grad_clip >= 0")
        if not 1 <= self.context_frames < self.window:
            raise ValueError(f"need 1 <= context_frames < window, got {self.context_frames}, {self.window}")
        if self.window > cfg.max_frames:
            raise ValueError(f"window {self.window} exceeds the model's max_frames={cfg.max_frames}")
        if any(int(h) < 1 for h in self.eval_horizons):
            raise ValueError(f"eval_horizons must be >= 1, got {self.eval_horizons}")
        limit = family_class(self.family).sequence_limit(cfg) if self.eval_horizons else None
        if limit is not None and self.context_frames + max(self.eval_horizons) > limit:
            raise ValueError(f"context_frames + max(eval_horizons) = {self.context_frames + max(self.eval_horizons)}"
                             f" exceeds the {self.family} model's max_frames={limit}")

    @property
    def config(self) -> Any:
        return model_config(self.family, self.model)

    @property
    def action_pooling(self) -> Pool | None:
        """How per-step actions are pooled per latent frame (None: the model takes no actions)."""
        spec = self.config.action
        return None if spec is None else ("mean" if spec.kind == "continuous" else "last")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def validation_loss(model: WorldModel, sequences: list[LatentSequence], job: WorldModelJob,
                    batches: int = 4) -> dict[str, float]:
    """Mean teacher-forced losses over fixed (seeded) windows, eval mode (no CFG drop): ``loss`` and, when
    the sequences carry rewards, ``reward_mse``, ``termination_bce`` and ``reward_mse_mean_baseline`` (the
    MSE of always predicting the batch's mean reward: a reward head that learnt something beats it)."""
    device = next(model.parameters()).device
    sampler = WindowSampler(sequences, job.window, job.batch, seed=job.seed + 1, rank=0)
    names = {"loss": "loss", "reward_loss": "reward_mse", "termination_loss": "termination_bce"}
    totals: dict[str, float] = {}
    was = model.training
    model.eval()
    try:
        for i in range(batches):
            b = {k: v.to(device) for k, v in sampler.batch_at(i).items()}
            g = torch.Generator().manual_seed(batch_seed(job.seed + 1, 0, i))
            out = training_outputs(model, b, job.context_frames, generator=g)
            for key, name in names.items():
                if key in out:
                    totals[name] = totals.get(name, 0.0) + float(out[key])
            if "rewards" in b:  # baseline: always predict the batch's mean reward
                totals["reward_mse_mean_baseline"] = totals.get("reward_mse_mean_baseline", 0.0) + \
                    float(b["rewards"].float().var(unbiased=False))
        return {k: v / batches for k, v in totals.items()}
    finally:
        model.train(was)


def train_loop(config: dict[str, Any]) -> None:
    """Per-worker body (Ray Train calls it on every worker; also runs in-process with one worker)."""
    job = WorldModelJob(**config)
    run_worker(job.store, job.prefix, job.steps, job.threads_per_worker, job.seed,
               lambda env: _train(job, env.info, env.store, env.ckpts, env.writer))


def load_job_tokenizer(store: ObjectStore, tokenizer_id: str, device: torch.device) -> Any:
    """The job's tokenizer for evaluation (ValueError when it is missing)."""
    from worldloom.models.tokenizer.job import CheckpointMissing, load_tokenizer

    try:
        return load_tokenizer(store, tokenizer_id, str(device))
    except CheckpointMissing as exc:
        raise ValueError(str(exc)) from None


def _real_videos(store: ObjectStore, sequences: list[LatentSequence]) -> list[Tensor | None]:
    """Each sequence's real clip frames (train rendition of its ClipRecord), or None when unavailable."""
    from worldloom.models.tokenizer.data import frames_to_tensor
    from worldloom.video.decode import read_frames

    out: list[Tensor | None] = []
    with tempfile.TemporaryDirectory(prefix="wl-real-") as tmp:
        for i, seq in enumerate(sequences):
            try:
                rec = ClipRecord.model_validate_json(store.get_bytes(clip_meta_key(seq.clip_id)))
                key = rec.renditions[TRAIN_RENDITION]
                res = int(seq.meta["resolution"])
                path = os.path.join(tmp, f"{i}.mp4")
                store.download(key, path)
                frames, _ = read_frames(path, size=(res, res))
                out.append(frames_to_tensor(frames))
                os.unlink(path)
            except Exception as exc:  # real frames are optional for the evaluation
                log.info("no real frames for clip %s: %s", seq.clip_id, exc)
                out.append(None)
    return out


def _train(job: WorldModelJob, info: Any, store: ObjectStore, ckpts: StoreCheckpoints,
           writer: ProgressWriter | None) -> None:
    device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    tokenizer = None
    if info.rank == 0 and job.eval_horizons:  # fail before training, not after it
        tokenizer = load_job_tokenizer(store, job.tokenizer_id, device)
    sequences = load_sequences(store, job.train_keys, actions=job.action_pooling, min_frames=job.window,
                               text=job.text, rewards=job.rewards)
    if not sequences:
        raise ValueError(f"no training sequence has {job.window} latent frames")
    model = build_model(job.family, job.model).to(device)
    model.check_sequences(sequences)
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.lr, betas=(0.9, 0.95), weight_decay=job.weight_decay)
    start = 0
    with tempfile.TemporaryDirectory(prefix="wl-resume-") as tmp:
        if ckpts.restore(Path(tmp)) is not None:
            _, state = load_world_checkpoint(Path(tmp) / MODEL_FILE, model=model, optimizer=optimizer,
                                             device=str(device))
            start = state.step
    trained: nn.Module = model
    if info.world_size > 1:
        import ray.train.torch

        # text / action / reward modules may see no input in a batch: let DDP skip their gradients
        trained = ray.train.torch.prepare_model(model, move_to_device=False,
                                                parallel_strategy_kwargs={"find_unused_parameters": True})
    if device.type == "cuda" and os.environ.get("WORLDLOOM_TORCH_COMPILE", "1") != "0":
        # GPU only: fused kernels; checkpoints still save the plain `model`. compile() returns an
        # OptimizedModule for a module, but torch types it as the callable it wraps
        trained = cast(nn.Module, torch.compile(trained))
    pids = gather_pids()
    if writer is not None:
        writer.resumed(start, pids)
    sampler = WindowSampler(sequences, job.window, job.batch, seed=job.seed, rank=info.rank, start_step=start)
    per_step = job.batch * job.window * info.world_size * model.items_per_latent_frame
    loss_sum, count, t0 = 0.0, 0, time.perf_counter()
    model.train()
    for step in range(start, job.steps):
        set_lr(optimizer, step, job.steps, job.lr)
        batch = {k: v.to(device) for k, v in next(sampler).items()}
        noise = torch.Generator().manual_seed(batch_seed(job.seed, info.rank, step) ^ 0xD1FF)
        with autocast_for(device):  # bf16 on CUDA (no loss scaling needed), fp32 on CPU
            loss = training_outputs(trained, batch, job.context_frames, generator=noise)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if job.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), job.grad_clip)
        optimizer.step()
        loss_sum += float(loss.detach())
        count += 1
        done = step + 1
        if done % job.log_every == 0 or done == job.steps:
            elapsed = time.perf_counter() - t0
            if writer is not None and math.isfinite(loss_sum):
                writer.log(done, {"loss": loss_sum / count, "sec_per_step": elapsed / count,
                                  model.throughput_unit: per_step * count / max(elapsed, 1e-9)})
            loss_sum, count, t0 = 0.0, 0, time.perf_counter()
            if broadcast_flag(writer is not None and writer.cancelled()):
                raise JobCancelled()
        if done % job.checkpoint_every == 0 and done < job.steps and info.rank == 0:
            ckpts.save(done, partial(_write_checkpoint, model, optimizer, done, job.seed))
    if info.rank != 0 or writer is None:
        return
    metrics = evaluate_job(job, store, model, tokenizer, sequences)
    with tempfile.TemporaryDirectory(prefix="wl-final-") as tmp:
        path = save_world_checkpoint(Path(tmp) / MODEL_FILE, model, step=job.steps,
                                     extra={"metrics": metrics, "tokenizer_id": job.tokenizer_id,
                                            "window": job.window, "context_frames": job.context_frames})
        publish_files(store, path.parent, model_dir(job.prefix))
    writer.finish("succeeded", metrics)


def _write_checkpoint(model: WorldModel, optimizer: torch.optim.Optimizer, step: int, seed: int, folder: Path) -> None:
    save_world_checkpoint(folder / MODEL_FILE, model, optimizer=optimizer, step=step, extra={"seed": seed})


def evaluate_job(job: WorldModelJob, store: ObjectStore, model: WorldModel, tokenizer: Any,
                 train_sequences: list[LatentSequence]) -> dict[str, float]:
    """A trained model's figures on the job's held-out clips (``val_*``; ``train_*`` without any):
    teacher-forced losses and, with a tokenizer, PSNR/SSIM per horizon vs the decoded and the real
    frames next to the copy-last baseline. The post-training service scores base, post-trained and
    scratch models with it, so every record's figures mean the same."""
    tag = "val_" if job.val_keys else "train_"
    sequences = (load_sequences(store, job.val_keys, actions=job.action_pooling, text=job.text,
                                rewards=job.rewards)
                 if job.val_keys else train_sequences[:job.eval_sequences])
    metrics: dict[str, float] = {}
    if any(s.frames >= job.window for s in sequences):
        metrics.update({f"{tag}{k}": v for k, v in validation_loss(model, sequences, job).items()})
    if tokenizer is None:
        return metrics
    longest = max((s.frames for s in sequences), default=0)
    horizons = [h for h in job.eval_horizons if job.context_frames + h <= longest]
    if not horizons:
        log.warning("no held-out sequence is long enough for any horizon %s; skipping evaluation", job.eval_horizons)
        return metrics
    sequences = [s for s in sequences if s.frames >= job.context_frames + max(horizons)][:job.eval_sequences]
    reals = _real_videos(store, sequences) if job.eval_real_frames else None
    result = evaluate_prediction(model, tokenizer, sequences, context_frames=job.context_frames, horizons=horizons,
                                 real_videos=reals, sampling=Sampling(temperature=0.0, steps=job.eval_steps),
                                 seed=job.seed,
                                 max_sequences=job.eval_sequences)
    metrics.update(flat_metrics(result, tag))
    return metrics


def run_job(job: WorldModelJob, scaling: ScalingSpec, *, name: str, address: str | None = None,
            in_process: bool = False) -> None:
    """Train ``job`` on Ray Train (or, with ``in_process``, in this process: tests and tiny runs)."""
    launch(train_loop, job.to_dict(), scaling, name=name, address=address, in_process=in_process)
