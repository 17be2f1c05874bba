"""Tokenizer training jobs: resolve the dataset, start the Ray Train run in the background, track state.

One job trains at a time per replica (the Ray workers are the parallelism). Jobs left queued or running
by a previous process are resumed at start-up from their last store checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from worldloom.core.catalog import TRAIN_RENDITION, ClipRecord, DatasetManifest
from worldloom.core.jobs import read_progress, request_cancel, store_settings_payload
from worldloom.core.settings import StoreSettings
from worldloom.core.store.base import InvalidKey, ObjectNotFound, ObjectStore
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

    def _dataset_clips(self, req: TrainRequest) -> tuple[list[tuple[str, str]], Lineage]:
        """(clip_id, train rendition key) pairs and the lineage they came from."""
        if req.dataset is not None:
            manifest = self._manifest(req.dataset.name, req.dataset.version)
            pairs = []
            for clip in manifest.clips:
                uri = (clip.get("renditions") or {}).get(TRAIN_RENDITION)
                if uri:
                    pairs.append((clip["clip_id"], self.store.key_from_uri(uri)))
            lineage = Lineage(dataset=f"{manifest.name}@v{manifest.version}",
                              dataset_uri=self.store.uri(f"datasets/{manifest.name}/v{manifest.version}.json"))
        else:
            assert req.clips is not None
            flt = req.clips
            pairs = []
            for info in self.store.list("clips/"):
                if not info.key.endswith("/meta.json"):
                    continue
                rec = ClipRecord.model_validate_json(self.store.get_bytes(info.key))
                if rec.status != "accepted" or TRAIN_RENDITION not in rec.renditions:
                    continue
                if flt.source and rec.source != flt.source or flt.config_hash and rec.config_hash != flt.config_hash:
                    continue
                if not set(flt.tags) <= set(rec.tags):
                    continue
                pairs.append((rec.clip_id, rec.renditions[TRAIN_RENDITION]))
                if len(pairs) >= flt.limit:
                    break
            lineage = Lineage(clip_filter=flt.model_dump())
        if not pairs:
            raise TokenizeError(422, "no_clips", "the dataset/filter selects no accepted clips with a training rendition")
        if len(pairs) > self.settings.max_train_clips:
            raise TokenizeError(422, "too_many_clips", f"{len(pairs)} clips; the limit is {self.settings.max_train_clips}")
        pairs.sort()
        lineage.clip_ids_sha256 = hashlib.sha256("\n".join(c for c, _ in pairs).encode()).hexdigest()
        return pairs, lineage

    def _manifest(self, name: str, version: int | None) -> DatasetManifest:
        try:
            if version is None:
                versions = [int(i.key.rsplit("/v", 1)[1].removesuffix(".json")) for i in self.store.list(f"datasets/{name}/")
                            if i.key.endswith(".json")]
                if not versions:
                    raise ObjectNotFound(name)
                version = max(versions)
            return DatasetManifest.model_validate_json(self.store.get_bytes(f"datasets/{name}/v{version}.json"))
        except (ObjectNotFound, InvalidKey):
            raise TokenizeError(404, "dataset_not_found", f"no dataset {name!r}"
                                + (f" version {version}" if version else "")) from None

    @staticmethod
    def _split(pairs: list[tuple[str, str]], val_fraction: float) -> tuple[list[str], list[str]]:
        """Held-out clips chosen by hash of the clip id: stable across runs and replicas."""
        if len(pairs) < 2 or val_fraction <= 0:
            return [k for _, k in pairs], []
        ranked = sorted(pairs, key=lambda p: hashlib.sha256(p[0].encode()).hexdigest())
        n_val = max(1, round(len(pairs) * val_fraction))
        return [k for _, k in ranked[n_val:]], [k for _, k in ranked[:n_val]]

    # ------------------------------------------------------------------ lifecycle

    def create(self, req: TrainRequest) -> TokenizerRecord:
        if req.workers > self.settings.max_workers:
            raise TokenizeError(422, "too_many_workers", f"{req.workers} workers; the limit is {self.settings.max_workers}")
        if req.use_gpu and not self.settings.allow_gpu:
            raise TokenizeError(422, "gpu_not_allowed", "this deployment does not run GPU jobs")
        if req.steps > self.settings.max_steps:
            raise TokenizeError(422, "too_many_steps", f"{req.steps} steps; the limit is {self.settings.max_steps}")
        cfg = tokenizer_config(req)
        pairs, lineage = self._dataset_clips(req)
        train, val = self._split(pairs, req.val_fraction)
        lineage.train_clips, lineage.val_clips = len(train), len(val)
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
                pairs, _ = self._dataset_clips(req)
                train, val = self._split(pairs, req.val_fraction)
                job = self._make_job(record.tokenizer_id, req, TokenizerConfig.from_dict(record.config), train, val)
            except Exception as exc:  # noqa: BLE001 - data gone since: record why
                self.registry.update(record.tokenizer_id, state="failed", error=f"cannot resume: {exc}")
                continue
            self.submit(record.tokenizer_id, job, req)
            resumed.append(record.tokenizer_id)
        return resumed

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

