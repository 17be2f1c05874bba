"""World-model training jobs: select tokenized clips, size the model from the tokenizer, run on Ray Train.

One job trains at a time per replica (the Ray workers are the parallelism); jobs a previous process left
queued or running resume from their last store checkpoint at start-up. A finished job's model is in the
registry and announced on ``models.trained``.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worldloom.core.errors import Refusal
from worldloom.core import events
from worldloom.core.bus import Bus
from worldloom.core.catalog import ClipRecord, clip_meta_key
from worldloom.core.jobs import read_progress, request_cancel, store_settings_payload
from worldloom.core.selection import ClipFilter, DatasetRef, SelectionError, select_clips
from worldloom.core.settings import StoreSettings
from worldloom.core.store.base import ObjectNotFound, ObjectStore
from worldloom.models.tokenizer import CheckpointError
from worldloom.models.tokenizer.job import load_tokenizer
from worldloom.models.tokenizer.shards import shard_key
from worldloom.models.training import ScalingSpec
from worldloom.models.world import ActionSpec, ARConfig, DiTConfig
from worldloom.models.world.common import SIZES
from worldloom.models.world.data import actions_meta_key, load_episode_arrays, read_shard
from worldloom.models.world.job import DEFAULT_HORIZONS, WorldModelJob, model_key, run_job
from worldloom.models.world.registry import ModelLineage, ModelNotFound, ModelRecord, ModelRegistry, model_prefix
from worldloom.train.settings import TrainSettings

log = logging.getLogger("worldloom.train.jobs")


class TrainError(Refusal):
    """A refused training request."""


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("world-model", min_length=1, max_length=100)
    family: Literal["ar", "diffusion"]
    size: str = Field("tiny", description=f"one of {sorted(SIZES)}")
    tokenizer_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$",
                              description="discrete tokenizer for 'ar', continuous for 'diffusion'; the clips "
                                          "must have been tokenized with it (activate it in the tokenize service)")
    dataset: DatasetRef | None = None
    clips: ClipFilter | None = None
    actions: bool = Field(False, description="condition on the episodes' recorded actions (simulator data)")
    text: bool = Field(False, description="condition on the clips' captions (MiniLM embeddings); every clip needs one")
    rewards: bool = Field(False, description="train reward and termination heads on the episodes' recorded rewards "
                                             "(simulator data; for RL in imagination)")
    window: int = Field(4, ge=2, le=64, description="latent frames per training window")
    context_frames: int = Field(1, ge=1, le=63)
    eval_horizons: list[int] = Field(default_factory=lambda: list(DEFAULT_HORIZONS), max_length=8)
    steps: int = Field(1000, ge=1)
    batch: int = Field(8, ge=1, le=1024)
    lr: float = Field(3e-4, gt=0, le=1)
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    val_fraction: float = Field(0.1, ge=0, lt=1)
    eval_steps: int = Field(10, ge=1, le=100, description="diffusion sampling steps for evaluation")
    seed: int = 0
    parent_model: str | None = Field(None, description="post-training: start from this model's weights (same family "
                                                       "and tokenizer; tensors that fit are copied, e.g. a new "
                                                       "action width starts fresh); recorded in the lineage")
    ar_head: Literal["factorized", "joint"] = Field(
        "factorized", description="AR output head: one softmax per FSQ digit (fast, the default) or one over "
                                  "the whole codebook")

    @model_validator(mode="after")
    def _check(self) -> JobRequest:
        if (self.dataset is None) == (self.clips is None):
            raise ValueError("give exactly one of 'dataset' or 'clips'")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}")
        if self.context_frames >= self.window:
            raise ValueError("context_frames must be smaller than window")
        return self


class JobManager:
    def __init__(self, store: ObjectStore, store_settings: StoreSettings, bus: Bus, registry: ModelRegistry,
                 settings: TrainSettings) -> None:
        self.store, self.store_settings, self.bus, self.registry = store, store_settings, bus, registry
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="world-model-job")
        self._running: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ planning

    def _plan(self, model_id: str, req: JobRequest) -> tuple[WorldModelJob, ModelLineage]:
        try:
            sel = select_clips(self.store, req.dataset, req.clips, self.settings.max_train_clips)
        except SelectionError as exc:
            raise TrainError(exc.status, exc.code, exc.message) from None
        tokenized = [c for c in sel.clips if self.store.exists(shard_key(req.tokenizer_id, c.clip_id))]
        if not tokenized:
            raise TrainError(422, "no_tokenized_clips", f"none of the {len(sel.clips)} selected clips is tokenized "
                             f"with {req.tokenizer_id}; activate that tokenizer in the tokenize service first")
        sel.clips = tokenized
        if req.text:
            self._check_captions(sel.clips)
        train, val = sel.split(req.val_fraction)
        config = self._model_config(req, shard_key(req.tokenizer_id, train[0].clip_id), train[0].video_id)
        lineage = ModelLineage(datasets=[sel.label], clip_filter=sel.clip_filter, tokenizer_id=req.tokenizer_id,
                               parent_model=req.parent_model, clip_ids_sha256=sel.ids_sha256,
                               train_clips=len(train), val_clips=len(val))
        try:
            job = WorldModelJob(
                prefix=model_prefix(model_id), store=store_settings_payload(self.store_settings), family=req.family,
                model=config, tokenizer_id=req.tokenizer_id,
                train_keys=[shard_key(req.tokenizer_id, c.clip_id) for c in train],
                val_keys=[shard_key(req.tokenizer_id, c.clip_id) for c in val], window=req.window,
                context_frames=req.context_frames, batch=req.batch, steps=req.steps, lr=req.lr,
                checkpoint_every=req.checkpoint_every, log_every=req.log_every, seed=req.seed,
                eval_horizons=list(req.eval_horizons), eval_steps=req.eval_steps,
                init_from=model_key(model_prefix(req.parent_model)) if req.parent_model else None, text=req.text,
                rewards=req.rewards)
        except ValueError as exc:
            raise TrainError(422, "bad_config", str(exc)) from None
        return job, lineage

    def _model_config(self, req: JobRequest, first_shard: str, video_id: str) -> dict[str, Any]:
        """Size the model from the data: vocabulary / latent channels and grid from the tokenizer's shards."""
        try:
            tokenizer = load_tokenizer(self.store, req.tokenizer_id)
        except CheckpointError as exc:
            raise TrainError(422, "bad_tokenizer", str(exc)) from None
        array, kind, _ = read_shard(self.store.get_bytes(first_shard))
        want = "discrete" if req.family == "ar" else "continuous"
        if kind != want or tokenizer.config.kind != want:
            raise TrainError(422, "tokenizer_kind", f"the {req.family} family needs a {want} tokenizer; "
                             f"{req.tokenizer_id} is {tokenizer.config.kind}")
        action = self._action_spec(video_id) if req.actions else None
        if req.rewards:
            arrays = load_episode_arrays(self.store, video_id)
            if arrays is None or "rewards" not in arrays:
                raise TrainError(422, "no_rewards", f"video {video_id} has no recorded rewards (only simulator "
                                 "episodes have them); train without 'rewards'")
        horizon = max(req.eval_horizons, default=1)
        try:
            if req.family == "ar":
                _, h, w = array.shape
                return ARConfig.for_tokenizer(tokenizer.config, req.size, factorized=req.ar_head == "factorized",
                                              tokens_per_frame=h * w, action=action, reward_head=req.rewards,
                                              max_frames=max(req.window, req.context_frames + horizon)).to_dict()
            c, _, h, w = array.shape
            return DiTConfig.preset(req.size, in_channels=c, latent_size=(h, w), patch_size=2 if min(h, w) >= 8 else 1,
                                    max_frames=req.window, n_future=req.window - req.context_frames,
                                    action=action, reward_head=req.rewards).to_dict()
        except (TypeError, ValueError) as exc:
            raise TrainError(422, "bad_config", str(exc)) from None

    def _action_spec(self, video_id: str) -> ActionSpec:
        try:
            space = json.loads(self.store.get_bytes(actions_meta_key(video_id)))["action_space"]
        except (ObjectNotFound, KeyError, ValueError):
            raise TrainError(422, "no_actions", f"video {video_id} has no recorded actions "
                             "(only simulator episodes have them); train without 'actions'") from None
        if space.get("type") == "Discrete":
            return ActionSpec.discrete(int(space["n"]))
        shape = space.get("shape") or [1]
        dim = 1
        for d in shape:
            dim *= int(d)
        return ActionSpec.continuous(dim)

    # ------------------------------------------------------------------ lifecycle

    def create(self, req: JobRequest) -> ModelRecord:
        if req.workers > self.settings.max_workers:
            raise TrainError(422, "too_many_workers", f"{req.workers} workers; the limit is {self.settings.max_workers}")
        if req.use_gpu and not self.settings.allow_gpu:
            raise TrainError(422, "gpu_not_allowed", "this deployment does not run GPU jobs")
        if req.steps > self.settings.max_steps:
            raise TrainError(422, "too_many_steps", f"{req.steps} steps; the limit is {self.settings.max_steps}")
        if req.parent_model:
            self._check_parent(req)
        model_id = f"wm-{uuid.uuid4().hex[:12]}"
        job, lineage = self._plan(model_id, req)
        record = ModelRecord(model_id=model_id, name=req.name, family=req.family, size=req.size, config=job.model,
                             request=req.model_dump(mode="json"), lineage=lineage, total_steps=req.steps)
        self.registry.save(record)
        self._submit(model_id, job, req)
        return self.registry.get(model_id)

    def _check_captions(self, clips: list[Any]) -> None:
        missing = []
        for clip in clips:
            try:
                record = ClipRecord.model_validate_json(self.store.get_bytes(clip_meta_key(clip.clip_id)))
            except ObjectNotFound:
                record = None
            if record is None or not record.caption.strip():
                missing.append(clip.clip_id)
        if missing:
            raise TrainError(422, "no_captions", f"{len(missing)} of {len(clips)} selected clips have no caption "
                             f"(e.g. {missing[0]}); train without 'text' or select captioned clips")

    def _check_parent(self, req: JobRequest) -> None:
        try:
            parent = self.registry.raw(req.parent_model or "")
        except ModelNotFound:
            raise TrainError(404, "model_not_found", f"no parent model {req.parent_model!r}") from None
        if parent.state != "succeeded":
            raise TrainError(409, "model_not_ready", f"parent model {parent.model_id} is {parent.state}")
        if parent.family != req.family or parent.lineage.tokenizer_id != req.tokenizer_id:
            raise TrainError(422, "parent_mismatch", f"parent model {parent.model_id} is a {parent.family} model on "
                             f"tokenizer {parent.lineage.tokenizer_id}; post-training needs the same family and "
                             "tokenizer (its tokens mean nothing in another tokenizer's space)")

    def _submit(self, model_id: str, job: WorldModelJob, req: JobRequest) -> None:
        with self._lock:
            self._running.add(model_id)
        self._executor.submit(self._run, model_id, job, req)

    def _run(self, model_id: str, job: WorldModelJob, req: JobRequest) -> None:
        try:
            if self.store.exists(f"{model_prefix(model_id)}/cancel"):
                self.registry.update(model_id, state="cancelled")
                return
            self.registry.update(model_id, state="running")
            run_job(job, ScalingSpec(num_workers=req.workers, use_gpu=req.use_gpu), name=model_id,
                    address=self.settings.ray_address, in_process=self.settings.in_process_training)
            self._finish(model_id, req)
        except Exception as exc:  # noqa: BLE001 - recorded on the job; the service stays up
            log.exception("world-model job %s failed", model_id)
            self.registry.update(model_id, state="failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running.discard(model_id)

    def _finish(self, model_id: str, req: JobRequest) -> None:
        progress = read_progress(self.store, model_prefix(model_id))
        if progress is not None and progress.state == "cancelled":
            self.registry.update(model_id, state="cancelled")
            return
        key = model_key(model_prefix(model_id))
        if not self.store.exists(key):
            self.registry.update(model_id, state="failed", error="training ended without a model")
            return
        metrics = progress.metrics if progress else {}
        record = self.registry.update(model_id, state="succeeded", model_uri=self.store.uri(key), metrics=metrics)
        payload = events.ModelTrained(
            model_id=model_id, name=record.name, family=record.family, size=record.size,
            tokenizer_id=req.tokenizer_id, model_uri=record.model_uri, datasets=record.lineage.datasets,
            parent_model=req.parent_model or "", metrics=metrics, steps=req.steps)
        env = events.new_event("train", payload, lineage=[req.tokenizer_id, *record.lineage.datasets])
        self.bus.publish(events.TOPIC_MODELS_TRAINED, env, model_id)

    def cancel(self, model_id: str) -> ModelRecord:
        record = self.registry.get(model_id)
        if record.state in ("succeeded", "failed", "cancelled"):
            raise TrainError(409, "job_finished", f"job {model_id} is already {record.state}")
        request_cancel(self.store, model_prefix(model_id))
        with self._lock:
            running = model_id in self._running
        if record.state == "queued" and not running:
            self.registry.update(model_id, state="cancelled")
        return self.registry.get(model_id)

    def resume_unfinished(self) -> list[str]:
        resumed = []
        for record in self.registry.list():
            if record.state not in ("queued", "running") or not record.request or record.model_id in self._running:
                continue
            try:
                req = JobRequest.model_validate(record.request)
                job, _ = self._plan(record.model_id, req)
                job.model = record.config  # the model as first sized, even if the data grew since
            except Exception as exc:  # noqa: BLE001 - data or tokenizer gone since: record why
                self.registry.update(record.model_id, state="failed", error=f"cannot resume: {exc}")
                continue
            self._submit(record.model_id, job, req)
            resumed.append(record.model_id)
        return resumed

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
