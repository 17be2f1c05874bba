"""Tokenizer training jobs on the job platform: what is specific to planning, running and finishing one.

Planning resolves the clips (a dataset manifest or a clip filter), splits off held-out clips and
freezes both lists with the tokenizer config into the plan; the workers run
:func:`worldloom.models.tokenizer.job.train_loop` from that plan (the deployment's launcher starts them:
Ray Train from this process, or a RayJob); a finished tokenizer is activated when the request asked for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from worldloom.core.catalog import tokenizer_model_key, tokenizer_prefix
from worldloom.core.jobs import JobManager, WorkerSpec
from worldloom.core.selection import select_clips
from worldloom.core.settings import StoreSettings, TrainingResources
from worldloom.core.store.base import ObjectStore
from worldloom.models.tokenizer.job import TokenizerJob, train_loop
from worldloom.models.tokenizer.model import TokenizerConfig
from worldloom.models.training.driver import worker_spec
from worldloom.tokenize.errors import TokenizeError
from worldloom.tokenize.registry import Lineage, TokenizerRecord, TokenizerRegistry
from worldloom.tokenize.schemas import TokenizerJobRequest

#: request fields the worker job takes as they are
_SHARED = {f.name for f in fields(TokenizerJob)} & set(TokenizerJobRequest.model_fields)


def tokenizer_config(req: TokenizerJobRequest) -> TokenizerConfig:
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


class TokenizerJobs:
    """:class:`~worldloom.core.jobs.JobHooks` for tokenizer training."""

    id_prefix = "tok"

    def __init__(self, store: ObjectStore, store_settings: StoreSettings, registry: TokenizerRegistry,
                 resources: TrainingResources, on_activate: Callable[[str], Any] | None = None) -> None:
        self.store, self.store_settings, self.registry = store, store_settings, registry
        self.resources, self.on_activate = resources, on_activate

    def plan(self, job_id: str, req: TokenizerJobRequest) -> tuple[TokenizerRecord, dict[str, Any]]:
        cfg = tokenizer_config(req)
        sel = select_clips(self.store, req.dataset, req.clips, self.resources.max_clips)
        train, val = sel.split(req.val_fraction)
        try:
            job = TokenizerJob(prefix=tokenizer_prefix(job_id), store={}, tokenizer=cfg.to_dict(),
                               train_keys=[c.train_key for c in train], val_keys=[c.train_key for c in val],
                               **{name: getattr(req, name) for name in _SHARED})
        except ValueError as exc:
            raise TokenizeError(422, "bad_config", str(exc)) from None
        lineage = Lineage(dataset=sel.dataset, dataset_uri=sel.dataset_uri, clip_filter=sel.clip_filter,
                          clip_ids_sha256=sel.ids_sha256, train_clips=len(train), val_clips=len(val))
        record = TokenizerRecord(tokenizer_id=job_id, name=req.name, config=cfg.to_dict(),
                                 request=req.model_dump(mode="json"), lineage=lineage, total_steps=req.steps)
        plan = job.to_dict()
        del plan["store"]  # credentials are added at run time, never written to the store
        return record, plan

    def worker(self, record: TokenizerRecord, plan: dict[str, Any]) -> WorkerSpec:
        req = TokenizerJobRequest.model_validate(record.request)
        return worker_spec(record.job_id, tokenizer_prefix(record.job_id), train_loop, plan, req.workers, req.use_gpu)

    def model_key(self, job_id: str) -> str:
        return tokenizer_model_key(job_id)

    def announce(self, record: TokenizerRecord) -> None:
        if (record.request or {}).get("activate"):
            self.registry.activate(record.job_id)
            if self.on_activate is not None:
                self.on_activate(record.job_id)


TokenizerJobManager = JobManager[TokenizerRecord, TokenizerJobRequest]
