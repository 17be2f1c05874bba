"""Tokenizer training jobs: resolve the dataset, start the Ray Train run in the background, track state.

One job trains at a time per replica (the Ray workers are the parallelism). Jobs left queued or running
by a previous process are resumed at start-up from their last store checkpoint.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from worldloom.core.jobs import read_progress, request_cancel, store_settings_payload
from worldloom.core.settings import StoreSettings
from worldloom.core.selection import SelectionError, select_clips
from worldloom.core.store.base import ObjectStore
from worldloom.models.tokenizer.job import TokenizerJob, model_key, run_job
from worldloom.models.tokenizer.model import TokenizerConfig
from worldloom.models.training import ScalingSpec
from worldloom.tokenize.errors import TokenizeError
from worldloom.tokenize.registry import Lineage, Registry, TokenizerRecord, TrainRequest, prefix
from worldloom.tokenize.settings import TokenizeSettings

log = logging.getLogger("worldloom.tokenize.jobs")


def tokenizer_config(req: TrainRequest) -> TokenizerConfig:
    changes: dict[str, Any] = {}
    if req.fsq_levels is not None:
        if req.kind != "discrete":
            raise TokenizeError(422, "bad_config", "fsq_levels apply to discrete tokenizers only")
        if any(level < 2 or level > 64 for level in req.fsq_levels):
            raise TokenizeError(422, "bad_config", "every FSQ level must be in [2, 64]")
        changes["fsq_levels"] = tuple(req.fsq_levels)
    if req.latent_channels is not None:
        if req.kind != "continuous":
            raise TokenizeError(422, "bad_config", "latent_channels apply to continuous tokenizers only")
        changes["latent_channels"] = req.latent_channels
    try:
        cfg = TokenizerConfig.preset(req.size, req.kind, req.compression)
        return cfg.replace(**changes) if changes else cfg
    except ValueError as exc:
        raise TokenizeError(422, "bad_config", str(exc)) from None


class JobManager:
    def __init__(self, store: ObjectStore, store_settings: StoreSettings, registry: Registry,
                 settings: TokenizeSettings, on_activate: Callable[[str], Any] | None = None) -> None:
        self.on_activate = on_activate
        self.store, self.store_settings, self.registry, self.settings = store, store_settings, registry, settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer-job")
        self._jobs: dict[str, TokenizerJob] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ dataset resolution

    def _dataset_clips(self, req: TrainRequest) -> tuple[list[str], list[str], Lineage]:
        """Train and held-out rendition keys, and the lineage they came from."""
        try:
            sel = select_clips(self.store, req.dataset, req.clips, self.settings.max_train_clips)
        except SelectionError as exc:
            raise TokenizeError(exc.status, exc.code, exc.message) from None
        train, val = sel.split(req.val_fraction)
        lineage = Lineage(dataset=sel.dataset, dataset_uri=sel.dataset_uri, clip_filter=sel.clip_filter,
                          clip_ids_sha256=sel.ids_sha256, train_clips=len(train), val_clips=len(val))
        return [c.train_key for c in train], [c.train_key for c in val], lineage

    # ------------------------------------------------------------------ lifecycle

    def create(self, req: TrainRequest) -> TokenizerRecord:
        if req.workers > self.settings.max_workers:
            raise TokenizeError(422, "too_many_workers", f"{req.workers} workers; the limit is {self.settings.max_workers}")
        if req.use_gpu and not self.settings.allow_gpu:
            raise TokenizeError(422, "gpu_not_allowed", "this deployment does not run GPU jobs")
        if req.steps > self.settings.max_steps:
            raise TokenizeError(422, "too_many_steps", f"{req.steps} steps; the limit is {self.settings.max_steps}")
        cfg = tokenizer_config(req)
        train, val, lineage = self._dataset_clips(req)
        tokenizer_id = f"tok-{uuid.uuid4().hex[:12]}"
        job = self._make_job(tokenizer_id, req, cfg, train, val)
        record = TokenizerRecord(tokenizer_id=tokenizer_id, name=req.name, config=cfg.to_dict(),
                                 request=req.model_dump(mode="json"), lineage=lineage, total_steps=req.steps)
        self.registry.save(record)
        self.submit(tokenizer_id, job, req)
        return self.registry.get(tokenizer_id)

    def _make_job(self, tokenizer_id: str, req: TrainRequest, cfg: TokenizerConfig, train: list[str],
                  val: list[str]) -> TokenizerJob:
        try:
            return TokenizerJob(prefix=prefix(tokenizer_id), store=store_settings_payload(self.store_settings),
                                tokenizer=cfg.to_dict(), train_keys=train, val_keys=val, resolution=req.resolution,
                                frames=req.frames, batch=req.batch, num_images=req.num_images, steps=req.steps,
                                lr=req.lr, checkpoint_every=req.checkpoint_every, log_every=req.log_every,
                                seed=req.seed, augment=req.augment)
        except ValueError as exc:
            raise TokenizeError(422, "bad_config", str(exc)) from None

    def submit(self, tokenizer_id: str, job: TokenizerJob, req: TrainRequest) -> None:
        with self._lock:
            self._jobs[tokenizer_id] = job
        self._executor.submit(self._run, tokenizer_id, job, req)

    def _run(self, tokenizer_id: str, job: TokenizerJob, req: TrainRequest) -> None:
        if self.store.exists(f"{prefix(tokenizer_id)}/cancel"):
            self.registry.update(tokenizer_id, state="cancelled")
            return
        self.registry.update(tokenizer_id, state="running")
        scaling = ScalingSpec(num_workers=req.workers, use_gpu=req.use_gpu)
        try:
            run_job(job, scaling, name=tokenizer_id, address=self.settings.ray_address,
                    in_process=self.settings.in_process_training)
        except Exception as exc:  # noqa: BLE001 - recorded on the job, the service stays up
            log.exception("tokenizer job %s failed", tokenizer_id)
            self.registry.update(tokenizer_id, state="failed", error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            with self._lock:
                self._jobs.pop(tokenizer_id, None)
        progress = read_progress(self.store, prefix(tokenizer_id))
        if progress is not None and progress.state == "cancelled":
            self.registry.update(tokenizer_id, state="cancelled")
        elif self.store.exists(model_key(prefix(tokenizer_id))):
            self.registry.update(tokenizer_id, state="succeeded", model_uri=self.store.uri(model_key(prefix(tokenizer_id))),
                                 metrics=progress.metrics if progress else {})
            if req.activate:
                self.registry.activate(tokenizer_id)
                if self.on_activate is not None:
                    self.on_activate(tokenizer_id)
        else:
            self.registry.update(tokenizer_id, state="failed", error="training ended without a model")

    def cancel(self, tokenizer_id: str) -> TokenizerRecord:
        record = self.registry.get(tokenizer_id)
        if record.state in ("succeeded", "failed", "cancelled"):
            raise TokenizeError(409, "job_finished", f"tokenizer {tokenizer_id} is already {record.state}")
        request_cancel(self.store, prefix(tokenizer_id))
        if record.state == "queued" and tokenizer_id not in self._jobs:
            self.registry.update(tokenizer_id, state="cancelled")
        return self.registry.get(tokenizer_id)

    def resume_unfinished(self) -> list[str]:
        """Re-submit jobs a previous process left queued/running (they continue from their checkpoints)."""
        resumed = []
        for record in self.registry.list():
            if record.state not in ("queued", "running") or record.source != "trained" or not record.request:
                continue
            if record.tokenizer_id in self._jobs:
                continue
            try:
                req = TrainRequest.model_validate(record.request)
                train, val, _ = self._dataset_clips(req)
                job = self._make_job(record.tokenizer_id, req, TokenizerConfig.from_dict(record.config), train, val)
            except Exception as exc:  # noqa: BLE001 - data gone since: record why
                self.registry.update(record.tokenizer_id, state="failed", error=f"cannot resume: {exc}")
                continue
            self.submit(record.tokenizer_id, job, req)
            resumed.append(record.tokenizer_id)
        return resumed

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

