"""Post-training job: the per-worker loop the post-training service runs on Ray Train (or in-process).

One job, up to two phases, one ``progress.json``:

1. **posttrain** -- the base model's weights (``base_key``) get the mode's changes (:func:`apply_mode`: a
   new or resized action encoder, a reward head), are evaluated on the held-out episodes as they are
   ("before": ``base_val_*`` metrics; new modules start at zero output, so this is the base's behaviour),
   prepared with the method (:func:`~.methods.prepare`: full / heads / LoRA) and trained within the budget
   (``steps``, or ``minutes`` of wall time capped at ``steps``). Evaluated again ("after": ``val_*``,
   the keys a pretrained model's record has) and written to ``<prefix>/model/``: a plain
   ``world_model.safetensors`` (full, heads, LoRA merged) or only ``adapter.safetensors`` (LoRA kept
   separate, loaded onto the base by :func:`worldloom.models.world.registry.load_world_model`).
2. **scratch** (with ``baselines=["scratch"]``) -- a model of the same config, freshly initialised, trained
   on the same windows with the same budget (steps, or minutes) and evaluated the same way
   (``scratch_val_*``).

Both phases log a validation-loss curve on the held-out episodes (``val_loss`` / ``scratch_val_loss`` at
phase-local steps, step 0 included) so :func:`~.metrics.steps_to_loss_ratio` can say how many fewer steps
post-training needed. Checkpoints (the whole prepared state + AdamW, safetensors) carry the phase, its
step and elapsed time: a killed job resumes where it was, in either phase. Evaluation is
:func:`worldloom.models.world.job.evaluate_job`, the code that scores pretrained models.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from worldloom.core.catalog import WORLD_MODEL_ADAPTER_FILE, model_dir
from worldloom.core.jobs import ProgressWriter
from worldloom.core.store.base import ObjectStore
from worldloom.models.checkpoint import (
    StoreCheckpoints,
    publish_files,
    read_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from worldloom.models.posttrain.actions import ActionChange, resize_actions
from worldloom.models.posttrain.adapters import merge, save_adapter
from worldloom.models.posttrain.methods import LoraOptions, PosttrainError, Prepared, prepare
from worldloom.models.posttrain.metrics import steps_to_loss_ratio
from worldloom.models.training.optim import autocast_for, set_lr
from worldloom.models.training.worker import JobCancelled, broadcast_flag, gather_pids, run_worker
from worldloom.models.world.base import WorldModel, training_outputs
from worldloom.models.world.common import RewardHead
from worldloom.models.world.data import LatentSequence, Pool, WindowSampler, batch_seed, load_sequences
from worldloom.models.world.factory import build_model, save_world_checkpoint
from worldloom.models.world.job import MODEL_FILE, WorldModelJob, evaluate_job, validation_loss

log = logging.getLogger("worldloom.models.posttrain.job")

MODES: tuple[str, ...] = ("unsupervised", "supervised", "action", "reward")
BASELINES: tuple[str, ...] = ("scratch",)
STATE_FORMAT = "worldloom-posttrain-state"
ADAPTER_FILE = WORLD_MODEL_ADAPTER_FILE


@dataclass
class PosttrainJob:
    """Everything a worker needs; plain data (see the module docstring)."""

    prefix: str  # models/<id>
    store: dict[str, Any]  # StoreSettings payload, added at run time
    family: str
    base_model: str  # the base model's id (lineage, adapter sidecar)
    base_key: str  # its plain weights in the store (a LoRA base is merged by the service's loader first)
    base_sha256: str  # of the base model's stored file: an adapter is only ever loaded onto that base
    tokenizer_id: str
    mode: str
    method: str
    train_keys: list[str]
    val_keys: list[str] = field(default_factory=list)
    action: dict[str, Any] | None = None  # action mode: the episodes' ActionSpec (kind, dim / num_actions)
    resize_actions: bool = False
    lora: dict[str, Any] | None = None  # LoraOptions fields (method lora)
    merge: bool = False  # LoRA: fold the adapter into a plain model instead of keeping it separate
    baselines: list[str] = field(default_factory=list)
    steps: int = 1000  # the budget, or with ``minutes`` its upper bound
    minutes: float | None = None
    window: int = 4
    context_frames: int = 1
    batch: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    log_every: int = 10
    val_every: int = 10
    val_batches: int = 2
    seed: int = 0
    eval_horizons: list[int] = field(default_factory=lambda: [1, 2, 4])
    eval_sequences: int = 8
    eval_steps: int = 10
    eval_real_frames: bool = True
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.mode == "action" and self.action is None:
            raise ValueError("mode 'action' needs the episodes' action spec")
        unknown = set(self.baselines) - set(BASELINES)
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)}; known: {list(BASELINES)}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError("minutes must be > 0")
        for name in ("steps", "batch", "checkpoint_every", "log_every", "val_every", "val_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lora is not None and self.method != "lora":
            raise ValueError("lora options given but the method is not 'lora'")

    @property
    def text(self) -> bool:
        return self.mode == "supervised"

    @property
    def rewards(self) -> bool:
        return self.mode == "reward"

    @property
    def lora_options(self) -> LoraOptions | None:
        if self.method != "lora":
            return None
        lo = dict(self.lora or {})
        if lo.get("target_modules") is not None:
            lo["target_modules"] = tuple(lo["target_modules"])
        return LoraOptions(**lo)

    @property
    def keeps_adapter(self) -> bool:
        return self.method == "lora" and not self.merge

    def eval_job(self, config: dict[str, Any]) -> WorldModelJob:
        """The pretraining job description :func:`evaluate_job` and :func:`validation_loss` score with."""
        return WorldModelJob(prefix=self.prefix, store={}, family=self.family, model=config,
                             tokenizer_id=self.tokenizer_id, train_keys=self.train_keys, val_keys=self.val_keys,
                             window=self.window, context_frames=self.context_frames, batch=self.batch,
                             seed=self.seed, eval_horizons=list(self.eval_horizons),
                             eval_sequences=self.eval_sequences, eval_steps=self.eval_steps,
                             eval_real_frames=self.eval_real_frames, text=self.text, rewards=self.rewards)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -------------------------------------------------------------------------------------------- modes


def add_reward_head(model: WorldModel) -> tuple[str, ...]:
    """Give ``model`` (in place) reward and termination heads when it has none; returns the new modules."""
    if model.reward is not None:
        return ()
    ref = next(model.parameters())
    model.reward = RewardHead(int(model.config.d_model)).to(device=ref.device, dtype=ref.dtype)
    model.config = dataclasses.replace(model.config, reward_head=True)
    return ("reward",)


def apply_mode(model: WorldModel, mode: str, action: dict[str, Any] | None = None, *,
               resize: bool = False) -> tuple[tuple[str, ...], ActionChange | None]:
    """What the mode changes on the base before training: ``(new_modules, action change)``.

    ``unsupervised``: nothing (the clips' pixels only). ``supervised``: the text conditioner must exist
    (``no_text_conditioning``). ``action``: :func:`~.actions.resize_actions` for the episodes' spec.
    ``reward``: a reward head is added when the base has none; an action-conditioned base also gets the
    episodes' action spec (resized with ``resize``), since rewards depend on what the robot did.
    Refusals are :class:`PosttrainError`."""
    if mode not in MODES:
        raise PosttrainError("unknown_mode", f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "supervised":
        if model.text is None:
            raise PosttrainError("no_text_conditioning", f"this {model.description} base has no text conditioning "
                                 "(it was built with text_dim None); supervised post-training feeds labels as text")
        return (), None
    change = None
    if mode == "action" or (mode == "reward" and action is not None and model.action_spec is not None):
        change = resize_actions(model, action or {}, resize=resize)
    new = change.new_modules if change is not None else ()
    if mode == "reward":
        new += add_reward_head(model)
    return new, change


def sequence_pooling(model: WorldModel, mode: str) -> Pool | None:
    """How the worker pools actions for this mode (None: no actions): action mode always, reward mode
    when the base is action-conditioned (rewards depend on what the robot did)."""
    spec = model.action_spec
    if spec is None or mode not in ("action", "reward"):
        return None
    return "mean" if spec.kind == "continuous" else "last"


# ------------------------------------------------------------------------------------------- worker


def posttrain_loop(config: dict[str, Any]) -> None:
    """Per-worker body (Ray Train calls it on every worker; also runs in-process with one worker)."""
    job = PosttrainJob(**config)
    total = job.steps * (1 + len(job.baselines))
    run_worker(job.store, job.prefix, total, job.threads_per_worker, job.seed,
               lambda env: _Run(job, env.info, env.store, env.ckpts, env.writer).run())


@dataclass
class _Phase:
    name: str  # "posttrain" | "scratch"
    index: int
    model: WorldModel
    prepared: Prepared
    optimizer: torch.optim.Optimizer
    step: int = 0
    elapsed_s: float = 0.0


class _Run:
    def __init__(self, job: PosttrainJob, info: Any, store: ObjectStore, ckpts: StoreCheckpoints,
                 writer: ProgressWriter | None) -> None:
        self.job, self.info, self.store, self.ckpts, self.writer = job, info, store, ckpts, writer
        self.device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
        self.phases = ["posttrain", *job.baselines]

    # ---------------------------------------------------------------------------------------- setup

    def _base(self) -> tuple[WorldModel, tuple[str, ...], ActionChange | None]:
        from worldloom.models.world.factory import load_world_checkpoint

        with tempfile.TemporaryDirectory(prefix="wl-pt-base-") as tmp:
            local = Path(tmp) / MODEL_FILE
            self.store.download(self.job.base_key, str(local))
            self.store.download(self.job.base_key.removesuffix(".safetensors") + ".json", str(local.with_suffix(".json")))
            model, _ = load_world_checkpoint(local, device=str(self.device))
        torch.manual_seed(self.job.seed)  # new modules start the same on every worker and every restart
        new, change = apply_mode(model, self.job.mode, self.job.action, resize=self.job.resize_actions)
        return model, new, change

    def _phase(self, name: str, base_config: dict[str, Any], new: tuple[str, ...]) -> _Phase:
        """A phase's model, prepared and with its optimiser (a resumed phase loads its checkpoint over it)."""
        if name == "posttrain":
            model, new, _ = self._base()
            model, prepared = prepare(model, self.job.method, lora=self.job.lora_options, new_modules=new)
        else:
            torch.manual_seed(self.job.seed + 7919)
            model = build_model(self.job.family, base_config).to(self.device)
            model, prepared = prepare(model, "full")
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.job.lr, betas=(0.9, 0.95), weight_decay=self.job.weight_decay)
        return _Phase(name, self.phases.index(name), model, prepared, optimizer)

    # ------------------------------------------------------------------------------------------ run

    def run(self) -> None:
        job, info, writer = self.job, self.info, self.writer
        tokenizer = None
        if info.rank == 0 and job.eval_horizons:  # fail before training, not after it
            from worldloom.models.world.job import load_job_tokenizer

            tokenizer = load_job_tokenizer(self.store, job.tokenizer_id, self.device)
        base, new, change = self._base()
        config = base.config.to_dict()
        pooling = sequence_pooling(base, job.mode)
        sequences = load_sequences(self.store, job.train_keys, actions=pooling, min_frames=job.window,
                                   text=job.text, rewards=job.rewards)
        if not sequences:
            raise ValueError(f"no training sequence has {job.window} latent frames")
        base.check_sequences(sequences)
        val = load_sequences(self.store, job.val_keys, actions=pooling, min_frames=job.window, text=job.text,
                             rewards=job.rewards) if job.val_keys else []
        # evaluated on what the mode feeds: an action-conditioned base post-trained on pixels alone is
        # scored without actions (its episodes may have none)
        eval_job = job.eval_job(config if pooling else {**config, "action": None})
        if writer is not None:
            writer.note("posttrain", {"base_model": job.base_model, "mode": job.mode, "method": job.method,
                                      "action_change": change.to_dict() if change else None,
                                      "new_modules": list(new), "baselines": list(job.baselines)})
        restored = self._restore(config, new)
        if writer is not None:
            writer.resumed(restored.step + restored.index * job.steps if restored else 0, gather_pids())
        start = restored.index if restored else 0
        if restored is None and info.rank == 0 and writer is not None:
            before = evaluate_job(eval_job, self.store, base, tokenizer, sequences)
            self._metrics({f"base_{k}": v for k, v in before.items()})
        del base
        for index in range(start, len(self.phases)):
            phase = restored if restored is not None and restored.index == index else \
                self._phase(self.phases[index], config, new)
            restored = None
            self._train(phase, sequences, val, eval_job)
            if info.rank != 0 or writer is None:
                continue
            metrics = evaluate_job(eval_job, self.store, phase.model, tokenizer, sequences)
            prefix = "" if phase.name == "posttrain" else f"{phase.name}_"
            self._metrics({f"{prefix}{k}": v for k, v in metrics.items()}
                          | {f"{prefix}train_steps": float(phase.step), f"{prefix}train_seconds": phase.elapsed_s})
            if phase.name == "posttrain":
                writer.note("prepared", phase.prepared.to_dict())
                self._publish(phase)
            if index + 1 < len(self.phases):  # the next phase starts from a checkpoint of its own
                nxt = self._phase(self.phases[index + 1], config, new)
                self._checkpoint(nxt)
        if info.rank != 0 or writer is None:
            return
        curves = writer.progress.curves
        if "scratch" in job.baselines and curves.get("val_loss") and curves.get("scratch_val_loss"):
            self._metrics(steps_to_loss_ratio(curves["val_loss"], curves["scratch_val_loss"]))
        writer.progress.total_steps = max(writer.progress.step, 1)
        writer.finish("succeeded")

    def _metrics(self, values: dict[str, float]) -> None:
        assert self.writer is not None
        self.writer.progress.metrics.update({k: float(v) for k, v in values.items() if math.isfinite(float(v))})
        self.writer.flush(force=True)

    def _train(self, phase: _Phase, sequences: list[LatentSequence], val: list[LatentSequence],
               eval_job: WorldModelJob) -> None:
        job, info, writer, model = self.job, self.info, self.writer, phase.model
        trained: torch.nn.Module = model
        if info.world_size > 1:
            import ray.train.torch

            trained = ray.train.torch.prepare_model(model, move_to_device=False,
                                                    parallel_strategy_kwargs={"find_unused_parameters": True})
        curve = "val_loss" if phase.name == "posttrain" else f"{phase.name}_val_loss"
        loss_name = "loss" if phase.name == "posttrain" else f"{phase.name}_loss"
        params = [p for p in model.parameters() if p.requires_grad]
        sampler = WindowSampler(sequences, job.window, job.batch, seed=job.seed, rank=info.rank, start_step=phase.step)
        budget_s = job.minutes * 60 if job.minutes is not None else None
        if phase.step == 0:
            self._val_point(model, val, eval_job, curve, 0)
        loss_sum, count, t0 = 0.0, 0, time.perf_counter()
        last = time.perf_counter()
        model.train()
        # every rank takes rank 0's view of the clock, so all stop (and log, validate) at the same step
        time_up = budget_s is not None and broadcast_flag(phase.elapsed_s >= budget_s)
        while phase.step < job.steps and not time_up:
            set_lr(phase.optimizer, phase.step, job.steps, job.lr)
            batch = {k: v.to(self.device) for k, v in next(sampler).items()}
            noise = torch.Generator().manual_seed(batch_seed(job.seed, info.rank, phase.step) ^ 0xD1FF)
            with autocast_for(self.device):
                loss = training_outputs(trained, batch, job.context_frames, generator=noise)["loss"]
            phase.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if job.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, job.grad_clip)
            phase.optimizer.step()
            now = time.perf_counter()
            phase.elapsed_s += now - last
            last = now
            loss_sum += float(loss.detach())
            count += 1
            phase.step += 1
            done = phase.step
            time_up = budget_s is not None and broadcast_flag(phase.elapsed_s >= budget_s)
            ending = done == job.steps or time_up
            if done % job.log_every == 0 or ending:
                elapsed = time.perf_counter() - t0
                if writer is not None and math.isfinite(loss_sum):
                    self._log(phase, {loss_name: loss_sum / count}, elapsed / count)
                loss_sum, count, t0 = 0.0, 0, time.perf_counter()
                if broadcast_flag(writer is not None and writer.cancelled()):
                    raise JobCancelled()
            if done % job.val_every == 0 or ending:
                self._val_point(model, val, eval_job, curve, done)
                last = time.perf_counter()  # validation is not training time
            if done % job.checkpoint_every == 0 and not ending:
                self._checkpoint(phase)
                last = time.perf_counter()

    def _log(self, phase: _Phase, values: dict[str, float], sec_per_step: float) -> None:
        """Curve points at the phase's step; progress over every phase (minutes: by time)."""
        assert self.writer is not None
        job, p = self.job, self.writer.progress
        for name, value in values.items():
            p.curves[name] = [pt for pt in p.curves.get(name, []) if pt[0] < phase.step] + [(phase.step, float(value))]
        fraction = phase.step / job.steps
        if job.minutes is not None:
            fraction = max(fraction, min(1.0, phase.elapsed_s / (job.minutes * 60)))
        p.state, p.step = "running", phase.index * job.steps + phase.step
        p.percent = round(100.0 * (phase.index + fraction) / len(self.phases), 2)
        p.sec_per_step = sec_per_step
        left = (1 - fraction + len(self.phases) - phase.index - 1) * job.steps
        p.eta_s = round(sec_per_step * left, 1) if job.minutes is None else \
            round((1 - fraction + len(self.phases) - phase.index - 1) * job.minutes * 60, 1)
        self.writer.flush()

    def _val_point(self, model: WorldModel, val: list[LatentSequence], eval_job: WorldModelJob, curve: str,
                   step: int) -> None:
        if self.writer is None or not any(s.frames >= self.job.window for s in val):
            return
        loss = validation_loss(model, val, eval_job, batches=self.job.val_batches)["loss"]
        p = self.writer.progress
        p.curves[curve] = [pt for pt in p.curves.get(curve, []) if pt[0] < step] + [(step, float(loss))]
        self.writer.flush()

    # ---------------------------------------------------------------------------------- checkpoints

    def _checkpoint(self, phase: _Phase) -> None:
        if self.info.rank != 0:
            return
        global_step = phase.index * self.job.steps + phase.step

        def write(folder: Path) -> None:
            save_checkpoint(folder / "posttrain_state.safetensors", phase.model.state_dict(), format=STATE_FORMAT,
                            config=phase.model.config.to_dict(), meta={"family": phase.model.family},
                            optimizer=phase.optimizer, step=global_step,
                            extra={"phase": phase.name, "phase_step": phase.step, "elapsed_s": phase.elapsed_s})

        self.ckpts.save(global_step, write)

    def _restore(self, config: dict[str, Any], new: tuple[str, ...]) -> _Phase | None:
        with tempfile.TemporaryDirectory(prefix="wl-pt-resume-") as tmp:
            if self.ckpts.restore(Path(tmp)) is None:
                return None
            ckpt = read_checkpoint(Path(tmp) / "posttrain_state.safetensors", format=STATE_FORMAT,
                                   device=str(self.device))
            extra = ckpt.state.extra
            phase = self._phase(str(extra["phase"]), config, new)
            phase.model.load_state_dict(ckpt.weights, strict=True)
            restore_optimizer(phase.optimizer, ckpt, str(self.device))
            phase.step, phase.elapsed_s = int(extra["phase_step"]), float(extra["elapsed_s"])
            log.info("resumed %s phase at step %d", phase.name, phase.step)
            return phase

    # ---------------------------------------------------------------------------------------- output

    def _publish(self, phase: _Phase) -> None:
        """The post-trained model under ``<prefix>/model/``: the adapter alone, or plain weights."""
        job, model = self.job, phase.model
        extra = {"tokenizer_id": job.tokenizer_id, "window": job.window, "context_frames": job.context_frames,
                 "base_model": job.base_model, "mode": job.mode, "method": job.method}
        with tempfile.TemporaryDirectory(prefix="wl-pt-final-") as tmp:
            if job.keeps_adapter:
                path = save_adapter(Path(tmp) / ADAPTER_FILE, model, phase.prepared, base_model=job.base_model,
                                    base_sha256=job.base_sha256, step=phase.step, extra=extra)
            else:
                if job.method == "lora":
                    merge(model)
                path = save_world_checkpoint(Path(tmp) / MODEL_FILE, model, step=phase.step, extra=extra)
            publish_files(self.store, path.parent, model_dir(job.prefix))
