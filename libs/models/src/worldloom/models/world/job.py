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

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from worldloom.core.jobs import ProgressWriter
from worldloom.core.store.base import ObjectStore
from worldloom.models.tokenizer.checkpoint import (
    CheckpointError,
    TrainState,
    _atomic_tensors,
    _jsonable,
    _optimizer_state,
    _sha256,
    _split_optimizer,
    read_safetensors,
)
from worldloom.models.tokenizer.train import autocast_for, lr_at
from worldloom.models.training import ScalingSpec, StoreCheckpoints
from worldloom.models.training.worker import JobCancelled, broadcast_flag, gather_pids, launch, run_worker
from worldloom.models.world.autoregressive import ARConfig, ARWorldModel
from worldloom.models.world.data import Sequence, WindowSampler, batch_seed, load_sequences
from worldloom.models.world.diffusion import DiffusionWorldModel, DiTConfig
from worldloom.models.world.evaluation import DEFAULT_HORIZONS, evaluate_prediction, flat_metrics

log = logging.getLogger("worldloom.models.world.job")

MODEL_FILE = "world_model.safetensors"
FORMAT = "worldloom-world-model"
VERSION = 1
FAMILIES = {"ar": (ARConfig, ARWorldModel), "diffusion": (DiTConfig, DiffusionWorldModel)}


def model_key(prefix: str) -> str:
    return f"{prefix}/model/{MODEL_FILE}"


def tokenizer_model_key(tokenizer_id: str) -> str:
    """Where the tokenizer job left the tokenizer (``tokenizers/<id>/model/tokenizer.safetensors``)."""
    from worldloom.models.tokenizer.job import model_key as tok_key

    return tok_key(f"tokenizers/{tokenizer_id}")


# ------------------------------------------------------------------------------------------ checkpoints


def build_model(family: str, config: dict[str, Any]) -> nn.Module:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    cfg_cls, model_cls = FAMILIES[family]
    return model_cls(cfg_cls.from_dict(dict(config)))


def family_of(model: nn.Module) -> str:
    for name, (_, cls) in FAMILIES.items():
        if isinstance(model, cls):
            return name
    raise TypeError(f"not a world model: {type(model).__name__}")


def save_world_checkpoint(path: str | os.PathLike[str], model: nn.Module, *,
                          optimizer: torch.optim.Optimizer | None = None, step: int = 0,
                          extra: dict[str, Any] | None = None) -> Path:
    """Weights (+ optimiser tensors) as safetensors and a JSON sidecar ``{family, config, step, ...}``
    (same layout and guarantees as the tokenizer checkpoints: atomic writes, SHA-256s, no pickle)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint path must end in .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    family, cfg = family_of(model), model.config.to_dict()  # type: ignore[operator]
    _atomic_tensors(model.state_dict(), path, {"format": FORMAT, "family": family, "config": json.dumps(cfg)})
    sidecar: dict[str, Any] = {"format": FORMAT, "version": VERSION, "family": family, "config": cfg,
                               "step": int(step), "extra": _jsonable(extra or {}, "extra"),
                               "weights": {"file": path.name, "sha256": _sha256(path)}, "optimizer": None}
    if optimizer is not None:
        tensors, rest = _split_optimizer(optimizer.state_dict())
        opath = path.with_suffix(".optim.safetensors")
        _atomic_tensors(tensors, opath)
        sidecar["optimizer"] = {"file": opath.name, "sha256": _sha256(opath), "class": type(optimizer).__name__,
                                **rest}
    side = path.with_suffix(".json")
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(sidecar, indent=1))
    os.replace(tmp, side)
    return path


def load_world_checkpoint(path: str | os.PathLike[str], *, model: nn.Module | None = None,
                          optimizer: torch.optim.Optimizer | None = None,
                          device: str = "cpu") -> tuple[nn.Module, TrainState]:
    """Load weights (strict) into ``model`` or a model rebuilt from the sidecar; restore the optimiser."""
    if optimizer is not None and model is None:
        raise ValueError("pass the model the optimizer was built over together with the optimizer")
    path = Path(path)
    weights = read_safetensors(path, device=device)
    side = path.with_suffix(".json")
    if not side.is_file():
        raise CheckpointError(f"{path}: sidecar {side.name} is missing")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{side}: sidecar is not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{side}: not a {FORMAT} sidecar")
    if meta.get("weights", {}).get("sha256") not in (None, _sha256(path)):
        raise CheckpointError(f"{path}: weights do not match the sidecar {side.name} (SHA-256 differs)")
    rebuilt = build_model(meta["family"], meta["config"])
    if model is None:
        model = rebuilt.to(device)
    elif family_of(model) != meta["family"] or model.config != rebuilt.config:  # type: ignore[attr-defined]
        raise CheckpointError(f"{path}: checkpoint {meta['family']} config differs from the model's")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the config: {exc}") from exc
    state = TrainState(step=int(meta.get("step", 0)), extra=meta.get("extra", {}))
    opt_meta = meta.get("optimizer")
    if optimizer is not None and opt_meta:
        opath = path.with_name(opt_meta["file"])
        if not opath.is_file() or opt_meta.get("sha256") not in (None, _sha256(opath)):
            raise CheckpointError(f"{opath}: optimizer state missing or not matching the sidecar")
        optimizer.load_state_dict(_optimizer_state(read_safetensors(opath, device=device), opt_meta))
        state.optimizer_restored = True
    return model, state


# ---------------------------------------------------------------------------------------------- the job


@dataclass
class WorldModelJob:
    """Everything a worker needs; plain data so it crosses process and machine boundaries."""

    prefix: str  # e.g. world_models/<id>: progress, checkpoints and the final model live under it
    store: dict[str, Any]  # StoreSettings payload (worldloom.core.jobs.store_settings_payload)
    family: str  # "ar" | "diffusion"
    model: dict[str, Any]  # ARConfig.to_dict() | DiTConfig.to_dict()
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
    #: post-training: start from this model's weights (a ``.../world_model.safetensors`` key in the store);
    #: tensors whose name and shape match are copied, the rest (e.g. a new embodiment's action encoder)
    #: start fresh. A resumed job continues from its own checkpoint instead.
    init_from: str | None = None
    #: condition on each clip's caption (MiniLM embedding, one prefix token / adaLN input per clip)
    text: bool = False
    #: train the reward / termination heads on the episodes' recorded rewards (the model needs reward_head)
    rewards: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {self.family!r}")
        try:
            cfg = FAMILIES[self.family][0].from_dict(dict(self.model))
        except TypeError as exc:
            raise ValueError(f"bad {self.family} model config: {exc}") from exc
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
        if self.family == "ar" and self.eval_horizons and \
                self.context_frames + max(self.eval_horizons) > cfg.max_frames:
            raise ValueError(f"context_frames + max(eval_horizons) = {self.context_frames + max(self.eval_horizons)}"
                             f" exceeds the AR model's max_frames={cfg.max_frames}")

    @property
    def config(self) -> ARConfig | DiTConfig:
        return FAMILIES[self.family][0].from_dict(dict(self.model))

    @property
    def action_pooling(self) -> str | None:
        """How per-step actions are pooled per latent frame (None: the model takes no actions)."""
        spec = self.config.action
        return None if spec is None else ("mean" if spec.kind == "continuous" else "last")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def init_from_parent(model: nn.Module, store: ObjectStore, key: str, tmp: Path,
                     device: torch.device) -> dict[str, int]:
    """Copy the parent checkpoint's tensors that fit ``model`` (same name and shape); returns counts.

    Why partial: post-training on another robot changes the action width, a text- or reward-conditioned
    child adds modules; the shared transformer is what carries the learnt dynamics."""
    local = tmp / "parent.safetensors"
    store.download(key, str(local))
    parent = read_safetensors(local, device=str(device))
    own = model.state_dict()
    fits = {k: v for k, v in parent.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise CheckpointError(f"{key}: no tensor of the parent model fits this model (different family or size?)")
    model.load_state_dict(fits, strict=False)
    return {"tensors_copied": len(fits), "parent_tensors_skipped": len(parent) - len(fits),
            "tensors_new": len(own) - len(fits)}


def _check_data(job: WorldModelJob, sequences: list[Sequence]) -> None:
    cfg = job.config
    kind = sequences[0].kind
    if job.family == "ar":
        if kind != "discrete":
            raise ValueError("the AR world model trains on discrete tokens; the shards hold continuous latents")
        h, w = sequences[0].data.shape[-2:]
        if h * w != cfg.tokens_per_frame:  # type: ignore[union-attr]
            raise ValueError(f"shards have {h}x{w} tokens per frame; model tokens_per_frame={cfg.tokens_per_frame}")
        top = max(int(s.data.max()) for s in sequences)
        if top >= cfg.vocab_size:  # type: ignore[union-attr]
            raise ValueError(f"token id {top} >= model vocab_size={cfg.vocab_size}")
    else:
        if kind != "continuous":
            raise ValueError("the diffusion world model trains on continuous latents; the shards hold tokens")
        c, _, h, w = sequences[0].data.shape
        if c != cfg.in_channels or (h, w) != tuple(cfg.latent_size):  # type: ignore[union-attr]
            raise ValueError(f"shards have latents [{c}, T, {h}, {w}]; model expects in_channels="
                             f"{cfg.in_channels}, latent_size={cfg.latent_size}")


def forward_batch(model: nn.Module, family: str, batch: dict[str, Tensor], context_frames: int, *,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """The model's outputs on one window batch (``model`` may be the DDP wrapper): ``loss`` and, with
    reward targets in the batch, ``reward_loss`` / ``termination_loss``."""
    x, extra = batch["frames"], {k: batch.get(k) for k in ("actions", "text", "rewards", "terminations")}
    if family == "ar":
        return model(x, context_frames=context_frames, **extra)
    return model(x[:, :, :context_frames], x[:, :, context_frames:], generator=generator, **extra)


def compute_loss(model: nn.Module, family: str, batch: dict[str, Tensor], context_frames: int, *,
                 generator: torch.Generator | None = None) -> Tensor:
    """Training loss of one window batch."""
    return forward_batch(model, family, batch, context_frames, generator=generator)["loss"]


@torch.no_grad()
def validation_loss(model: nn.Module, family: str, sequences: list[Sequence], job: WorldModelJob,
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
            out = forward_batch(model, family, b, job.context_frames, generator=g)
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


def _load_tokenizer(store: ObjectStore, tokenizer_id: str, device: torch.device) -> Any:
    from worldloom.models.tokenizer.job import CheckpointMissing, load_tokenizer

    try:
        return load_tokenizer(store, tokenizer_id, str(device))
    except CheckpointMissing as exc:
        raise ValueError(str(exc)) from None


def _real_videos(store: ObjectStore, sequences: list[Sequence]) -> list[Tensor | None]:
    """Each sequence's real clip frames (train rendition of its ClipRecord), or None when unavailable."""
    from worldloom.models.tokenizer.data import frames_to_tensor
    from worldloom.video.decode import read_frames

    out: list[Tensor | None] = []
    with tempfile.TemporaryDirectory(prefix="wl-real-") as tmp:
        for i, seq in enumerate(sequences):
            try:
                rec = json.loads(store.get_bytes(f"clips/{seq.clip_id}/meta.json"))
                key = store.key_from_uri(rec["renditions"]["train.mp4"]) if "://" in rec["renditions"]["train.mp4"] \
                    else rec["renditions"]["train.mp4"]
                res = int(seq.meta["resolution"])
                path = os.path.join(tmp, f"{i}.mp4")
                store.download(key, path)
                frames, _ = read_frames(path, size=(res, res))
                out.append(frames_to_tensor(frames))
                os.unlink(path)
            except Exception as exc:  # noqa: BLE001 - real frames are optional for the evaluation
                log.info("no real frames for clip %s: %s", seq.clip_id, exc)
                out.append(None)
    return out


def _train(job: WorldModelJob, info: Any, store: ObjectStore, ckpts: StoreCheckpoints,
           writer: ProgressWriter | None) -> None:
    device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    tokenizer = None
    if info.rank == 0 and job.eval_horizons:  # fail before training, not after it
        tokenizer = _load_tokenizer(store, job.tokenizer_id, device)
    sequences = load_sequences(store, job.train_keys, actions=job.action_pooling, min_frames=job.window,  # type: ignore[arg-type]
                               text=job.text, rewards=job.rewards)
    if not sequences:
        raise ValueError(f"no training sequence has {job.window} latent frames")
    _check_data(job, sequences)
    model = build_model(job.family, job.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.lr, betas=(0.9, 0.95), weight_decay=job.weight_decay)
    start = 0
    with tempfile.TemporaryDirectory(prefix="wl-resume-") as tmp:
        if ckpts.restore(Path(tmp)) is not None:
            _, state = load_world_checkpoint(Path(tmp) / MODEL_FILE, model=model, optimizer=optimizer,
                                             device=str(device))
            start = state.step
        if start == 0 and job.init_from:
            copied = init_from_parent(model, store, job.init_from, Path(tmp), device)
            if writer is not None:
                writer.note("init_from", {"model": job.init_from, **copied})
    trained: nn.Module = model
    if info.world_size > 1:
        import ray.train.torch

        # text / action / reward modules may see no input in a batch: let DDP skip their gradients
        trained = ray.train.torch.prepare_model(model, move_to_device=False,
                                                parallel_strategy_kwargs={"find_unused_parameters": True})
    if device.type == "cuda" and os.environ.get("WORLDLOOM_TORCH_COMPILE", "1") != "0":
        trained = torch.compile(trained)  # GPU only: fused kernels; checkpoints still save the plain `model`
    pids = gather_pids()
    if writer is not None:
        writer.resumed(start, pids)
    sampler = WindowSampler(sequences, job.window, job.batch, seed=job.seed, rank=info.rank, start_step=start)
    cfg = job.config
    per_step = job.batch * job.window * info.world_size
    rate_name = "tokens_per_s" if job.family == "ar" else "latent_frames_per_s"
    if job.family == "ar":
        per_step *= cfg.tokens_per_frame  # type: ignore[union-attr]
    warmup = min(100, max(1, job.steps // 20))
    loss_sum, count, t0 = 0.0, 0, time.perf_counter()
    model.train()
    for step in range(start, job.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, job.steps, job.lr, warmup)
        batch = {k: v.to(device) for k, v in next(sampler).items()}
        noise = torch.Generator().manual_seed(batch_seed(job.seed, info.rank, step) ^ 0xD1FF)
        with autocast_for(device):  # bf16 on CUDA (no loss scaling needed), fp32 on CPU
            loss = compute_loss(trained, job.family, batch, job.context_frames, generator=noise)
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
                                  rate_name: per_step * count / max(elapsed, 1e-9)})
            loss_sum, count, t0 = 0.0, 0, time.perf_counter()
            if broadcast_flag(writer is not None and writer.cancelled()):
                raise JobCancelled()
        if done % job.checkpoint_every == 0 and done < job.steps and info.rank == 0:
            ckpts.save(done, lambda d, s=done: save_world_checkpoint(d / MODEL_FILE, model, optimizer=optimizer,
                                                                      step=s, extra={"seed": job.seed}))
    if info.rank != 0 or writer is None:
        return
    metrics = _final_metrics(job, store, model, tokenizer, sequences)
    with tempfile.TemporaryDirectory(prefix="wl-final-") as tmp:
        path = save_world_checkpoint(Path(tmp) / MODEL_FILE, model, step=job.steps,
                                     extra={"metrics": metrics, "tokenizer_id": job.tokenizer_id,
                                            "window": job.window, "context_frames": job.context_frames})
        with open(path, "rb") as fh:  # weights first, sidecar last: its presence means the weights are complete
            store.put_file(model_key(job.prefix), fh, path.stat().st_size)
        side = path.with_suffix(".json")
        store.put_bytes(model_key(job.prefix).replace(".safetensors", ".json"), side.read_bytes(), "application/json")
    writer.finish("succeeded", metrics)


def _final_metrics(job: WorldModelJob, store: ObjectStore, model: nn.Module, tokenizer: Any,
                   train_sequences: list[Sequence]) -> dict[str, float]:
    tag = "val_" if job.val_keys else "train_"
    sequences = (load_sequences(store, job.val_keys, actions=job.action_pooling, text=job.text,  # type: ignore[arg-type]
                                rewards=job.rewards)
                 if job.val_keys else train_sequences[:job.eval_sequences])
    metrics: dict[str, float] = {}
    if any(s.frames >= job.window for s in sequences):
        metrics.update({f"{tag}{k}": v for k, v in validation_loss(model, job.family, sequences, job).items()})
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
                                 real_videos=reals, steps=job.eval_steps, seed=job.seed,
                                 max_sequences=job.eval_sequences)
    metrics.update(flat_metrics(result, tag))
    return metrics


def run_job(job: WorldModelJob, scaling: ScalingSpec, *, name: str, address: str | None = None,
            in_process: bool = False) -> None:
    """Train ``job`` on Ray Train (or, with ``in_process``, in this process: tests and tiny runs)."""
    launch(train_loop, job.to_dict(), scaling, name=name, address=address, in_process=in_process)
