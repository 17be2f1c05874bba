"""World-model pretraining jobs on the job platform: select tokenized clips, size the model from the
tokenizer and its shards, run on Ray Train, announce the finished model on ``models.trained``.
(Starting from a trained model's weights is post-training: the posttrain service.)

Refusals (4xx before anything runs) are :class:`TrainError`; the service kit answers them.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from worldloom.core import events
from worldloom.core.bus import Bus
from worldloom.core.catalog import (
    token_shard_key,
    world_model_key,
    world_model_prefix,
)
from worldloom.core.errors import Refusal
from worldloom.core.jobs import JobManager, WorkerSpec
from worldloom.core.selection import SelectedClip, select_clips, uncaptioned
from worldloom.core.settings import StoreSettings, TrainingResources
from worldloom.core.store.base import ObjectStore
from worldloom.models.checkpoint import CheckpointError
from worldloom.models.tokenizer.job import load_tokenizer
from worldloom.models.tokenizer.shards import read_shard
from worldloom.models.training.driver import job_launcher, worker_spec
from worldloom.models.world import ActionSpec, IncompatibleModel, family_class
from worldloom.models.world.data import episode_action_spec, load_episode_arrays
from worldloom.models.world.job import WorldModelJob, train_loop
from worldloom.models.world.registry import WorldModelLineage, WorldModelRecord, WorldModelRegistry
from worldloom.train.schemas import WorldModelJobRequest

#: request fields the worker job takes as they are
_SHARED = {f.name for f in fields(WorldModelJob)} & set(WorldModelJobRequest.model_fields)


class TrainError(Refusal):
    """A refused training request."""


class WorldModelJobs:
    """:class:`~worldloom.core.jobs.JobHooks` for world-model pretraining."""

    id_prefix = "wm"

    def __init__(self, store: ObjectStore, store_settings: StoreSettings, bus: Bus, registry: WorldModelRegistry,
                 resources: TrainingResources) -> None:
        self.store, self.store_settings, self.bus = store, store_settings, bus
        self.registry, self.resources = registry, resources

    # ------------------------------------------------------------------------------------------ plan

    def plan(self, job_id: str, req: WorldModelJobRequest) -> tuple[WorldModelRecord, dict[str, Any]]:
        sel = select_clips(self.store, req.dataset, req.clips, self.resources.max_clips)
        tokenized = [c for c in sel.clips if self.store.exists(token_shard_key(req.tokenizer_id, c.clip_id))]
        if not tokenized:
            raise TrainError(422, "no_tokenized_clips", f"none of the {len(sel.clips)} selected clips is tokenized "
                             f"with {req.tokenizer_id}; activate that tokenizer in the tokenize service first")
        sel.clips = tokenized
        if req.text:
            self._check_captions(sel.clips)
        train, val = sel.split(req.val_fraction)
        config = self._model_config(req, train[0])
        try:
            job = WorldModelJob(prefix=world_model_prefix(job_id), store={}, model=config,
                                train_keys=[token_shard_key(req.tokenizer_id, c.clip_id) for c in train],
                                val_keys=[token_shard_key(req.tokenizer_id, c.clip_id) for c in val],
                                **{name: getattr(req, name) for name in _SHARED})
        except ValueError as exc:
            raise TrainError(422, "bad_config", str(exc)) from None
        lineage = WorldModelLineage(datasets=[sel.label], clip_filter=sel.clip_filter, tokenizer_id=req.tokenizer_id,
                                    clip_ids_sha256=sel.ids_sha256,
                                    train_clips=len(train), val_clips=len(val))
        record = WorldModelRecord(model_id=job_id, name=req.name, family=req.family, size=req.size, config=config,
                                  request=req.model_dump(mode="json"), lineage=lineage, total_steps=req.steps)
        plan = job.to_dict()
        del plan["store"]  # credentials are added at run time, never written to the store
        return record, plan

    def _model_config(self, req: WorldModelJobRequest, first: SelectedClip) -> dict[str, Any]:
        """Size the model from the data: vocabulary / latent channels and grid from the tokenizer's shards."""
        try:
            tokenizer = load_tokenizer(self.store, req.tokenizer_id)
        except CheckpointError as exc:
            raise TrainError(422, "bad_tokenizer", str(exc)) from None
        array, kind, _ = read_shard(self.store.get_bytes(token_shard_key(req.tokenizer_id, first.clip_id)))
        family = family_class(req.family)
        if kind != family.latent_kind or tokenizer.config.kind != family.latent_kind:
            raise TrainError(422, "tokenizer_kind", f"the {req.family} family needs a {family.latent_kind} tokenizer; "
                             f"{req.tokenizer_id} is {tokenizer.config.kind}")
        action = self._action_spec(first.video_id) if req.actions else None
        if req.rewards:
            arrays = load_episode_arrays(self.store, first.video_id)
            if arrays is None or "rewards" not in arrays:
                raise TrainError(422, "no_rewards", f"video {first.video_id} has no recorded rewards (only simulator "
                                 "episodes have them); train without 'rewards'")
        try:
            cfg = family.config_for_data(tokenizer.config, array.shape, size=req.size, action=action,
                                         reward_head=req.rewards, window=req.window, context_frames=req.context_frames,
                                         horizon=max(req.eval_horizons, default=1), options=req.family_options())
        except (TypeError, ValueError, IncompatibleModel) as exc:
            raise TrainError(422, "bad_config", str(exc)) from None
        return cfg.to_dict()

    def _action_spec(self, video_id: str) -> ActionSpec:
        spec = episode_action_spec(self.store, video_id)
        if spec is None:
            raise TrainError(422, "no_actions", f"video {video_id} has no recorded actions "
                             "(only simulator episodes have them); train without 'actions'")
        return spec

    def _check_captions(self, clips: list[SelectedClip]) -> None:
        missing = uncaptioned(self.store, clips)
        if missing:
            raise TrainError(422, "no_captions", f"{len(missing)} of {len(clips)} selected clips have no caption "
                             f"(e.g. {missing[0]}); train without 'text' or select captioned clips")

    # ------------------------------------------------------------------------------------- run, finish

    def worker(self, record: WorldModelRecord, plan: dict[str, Any]) -> WorkerSpec:
        req = WorldModelJobRequest.model_validate(record.request)
        return worker_spec(record.job_id, world_model_prefix(record.job_id), train_loop, plan, req.workers,
                           req.use_gpu)

    def model_key(self, job_id: str) -> str:
        return world_model_key(job_id)

    def announce(self, record: WorldModelRecord) -> None:
        req = WorldModelJobRequest.model_validate(record.request)
        payload = events.ModelTrained(
            model_id=record.model_id, name=record.name, family=record.family, size=record.size,
            tokenizer_id=req.tokenizer_id, model_uri=record.model_uri or "", datasets=record.lineage.datasets,
            parent_model="", metrics=record.metrics, steps=req.steps)
        env = events.new_event("train", payload, lineage=[req.tokenizer_id, *record.lineage.datasets],
                               event_id=events.effect_id(events.TOPIC_MODELS_TRAINED, record.model_id))
        self.bus.publish(events.TOPIC_MODELS_TRAINED, env, record.model_id)


class TrainService:
    def __init__(self, store: ObjectStore, store_settings: StoreSettings, bus: Bus,
                 resources: TrainingResources) -> None:
        self.registry = WorldModelRegistry(store)
        self.jobs = JobManager(store, self.registry, WorldModelJobs(store, store_settings, bus, self.registry, resources),
                               resources, launcher=job_launcher(resources, store_settings),
                               owns=lambda r: not r.lineage.posttrain)  # post-trained models: the posttrain service

    def model(self, model_id: str) -> WorldModelRecord:
        """A finished model (409 while its job is not)."""
        record = self.registry.get(model_id)
        if record.state != "succeeded":
            raise TrainError(409, "model_not_ready", f"model {model_id} is {record.state} ({record.percent:.0f}% done)")
        return record

    def close(self) -> None:
        self.jobs.close()
