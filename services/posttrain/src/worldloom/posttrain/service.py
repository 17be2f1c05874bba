"""Post-training jobs on the job platform: check the base model, the data and the mode / method against
each other (every refusal a 4xx before anything trains), save a search's hits as a dataset version,
freeze the plan, run :func:`worldloom.models.posttrain.job.posttrain_loop` on Ray Train and announce the
post-trained model on ``models.trained`` with its ``parent_model``.

Records live in the one world-model registry (``models/<id>``), so the generate service serves a
post-trained model like any other (a LoRA adapter kept separate is loaded onto its base).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from worldloom.core import events
from worldloom.core.bus import Bus
from worldloom.core.catalog import (
    clip_collections,
    read_dataset,
    token_shard_key,
    world_model_adapter_key,
    world_model_key,
    world_model_prefix,
)
from worldloom.core.clipsearch import ClipSearch, SearchRequest
from worldloom.core.errors import Refusal
from worldloom.core.jobs import JobManager, WorkerSpec
from worldloom.core.selection import SelectedClip, Selection, select_clip_ids, select_clips, uncaptioned
from worldloom.core.settings import StoreSettings
from worldloom.core.store.base import ObjectStore
from worldloom.core.vectors import VectorIndex
from worldloom.models.posttrain import PosttrainError, fits, resolve_targets
from worldloom.models.posttrain.job import PosttrainJob, apply_mode, posttrain_loop
from worldloom.models.training.driver import job_launcher, worker_spec
from worldloom.models.world import ActionSpec
from worldloom.models.world.data import episode_action_spec, load_episode_arrays
from worldloom.models.world.factory import build_skeleton
from worldloom.models.world.registry import (
    WorldModelLineage,
    WorldModelRecord,
    WorldModelRegistry,
    has_adapter,
    stored_weights_sha256,
)
from worldloom.posttrain.schemas import PosttrainRequest
from worldloom.posttrain.settings import PosttrainSettings

#: request fields the worker job takes as they are
_SHARED = ("method", "mode", "resize_actions", "merge", "baselines", "steps", "minutes", "batch", "lr",
           "checkpoint_every", "log_every", "val_every", "eval_steps", "eval_horizons", "seed")


class PosttrainRefused(Refusal):
    """A refused post-training request."""


def _refusal(exc: PosttrainError) -> PosttrainRefused:
    return PosttrainRefused(422, exc.code, str(exc))


class PosttrainJobs:
    """:class:`~worldloom.core.jobs.JobHooks` for post-training."""

    id_prefix = "wm"  # one registry, one id space with pretrained models

    def __init__(self, store: ObjectStore, bus: Bus, registry: WorldModelRegistry, settings: PosttrainSettings,
                 search: Callable[[], ClipSearch]) -> None:
        self.store, self.bus, self.registry, self.settings = store, bus, registry, settings
        self.resources = settings.training
        self._search = search

    # ------------------------------------------------------------------------------------------ plan

    def plan(self, job_id: str, req: PosttrainRequest) -> tuple[WorldModelRecord, dict[str, Any]]:
        if req.minutes is not None and req.minutes > self.settings.max_minutes:
            raise PosttrainRefused(422, "too_many_minutes", f"a budget of {req.minutes:g} minutes; the limit is "
                                   f"{self.settings.max_minutes:g}")
        base = self._base(req)
        tokenizer_id = base.lineage.tokenizer_id
        sel, query, hits = self._select(req)
        tokenized = [c for c in sel.clips if self.store.exists(token_shard_key(tokenizer_id, c.clip_id))]
        if not tokenized:
            raise PosttrainRefused(422, "no_tokenized_clips", f"none of the {len(sel.clips)} selected clips is "
                                   f"tokenized with {tokenizer_id}, the base model's tokenizer; tokenize them with it "
                                   "(activate it in the tokenize service)")
        sel.clips = tokenized
        train, val, held_label = self._split(req, sel, tokenizer_id)
        action = self._check_mode(req, base, Selection([*train, *val]))
        config, new = self._model_config(req, base, action)
        window = req.window or int((base.request or {}).get("window") or 4)
        context = req.context_frames or int((base.request or {}).get("context_frames") or 1)
        steps = req.steps if (req.minutes is None or "steps" in req.model_fields_set) else self.resources.max_steps
        lora = req.lora.model_dump() if req.method == "lora" and req.lora is not None else None
        try:
            job = PosttrainJob(
                prefix=world_model_prefix(job_id), store={}, family=base.family, base_model=base.model_id,
                base_key=world_model_key(base.model_id),
                base_sha256=stored_weights_sha256(self.store, world_model_key(base.model_id)),
                tokenizer_id=tokenizer_id, train_keys=[token_shard_key(tokenizer_id, c.clip_id) for c in train],
                val_keys=[token_shard_key(tokenizer_id, c.clip_id) for c in val], action=action, lora=lora,
                window=window, context_frames=context,
                **{**{k: getattr(req, k) for k in _SHARED}, "steps": steps, "baselines": list(req.baselines)})
            job.eval_job(config)  # window, horizons against the model's limits
        except ValueError as exc:
            raise PosttrainRefused(422, "bad_config", str(exc)) from None
        if hits is not None:  # everything checked: only now is the search saved, as a dataset version
            assert req.search is not None
            manifest = self._search().save_dataset(req.search.save_as or f"posttrain-{job_id}", hits,
                                                   description=f"post-training data of {job_id}", query=query)
            sel.dataset = sel.label = f"{manifest.name}@v{manifest.version}"
        accepted = req.model_copy(update={"window": window, "context_frames": context, "steps": steps})
        lineage = WorldModelLineage(
            datasets=[sel.label], clip_filter=sel.clip_filter, tokenizer_id=tokenizer_id, parent_model=base.model_id,
            dataset_query=query.model_dump(mode="json") if query is not None else None,
            clip_ids_sha256=sel.ids_sha256, train_clips=len(train), val_clips=len(val),
            posttrain={"mode": req.mode, "method": req.method, "lora": lora, "merge": req.merge, "action": action,
                       "resize_actions": req.resize_actions, "new_modules": list(new),
                       "baselines": list(req.baselines), "minutes": req.minutes, "steps": steps,
                       "base_size": base.size, "held_out": held_label})
        record = WorldModelRecord(model_id=job_id, name=req.name, family=base.family, size=base.size, config=config,
                                  request=accepted.model_dump(mode="json"), lineage=lineage,
                                  total_steps=steps * (1 + len(req.baselines)))
        plan = job.to_dict()
        del plan["store"]  # credentials are added at run time, never written to the store
        return record, plan

    def _split(self, req: PosttrainRequest, sel: Selection,
               tokenizer_id: str) -> tuple[list[SelectedClip], list[SelectedClip], str | None]:
        """(train, held-out, the held-out dataset's label): the request's ``held_out`` dataset (its
        episodes' clips leave training), else whole episodes hashed off by ``val_fraction``."""
        if req.held_out is None:
            train, val = sel.split(req.val_fraction)
            if not val:
                raise PosttrainRefused(422, "no_held_out", f"the {len(sel.clips)} selected clips come from "
                                       f"{len({c.video_id or c.clip_id for c in sel.clips})} episode(s)/video(s); "
                                       "evaluation holds out whole episodes, so the data needs at least two")
            return train, val, None
        held = select_clips(self.store, req.held_out, None, self.resources.max_clips)  # dataset_not_found: 404
        val = [c for c in held.clips if self.store.exists(token_shard_key(tokenizer_id, c.clip_id))]
        if not val:
            raise PosttrainRefused(422, "no_held_out", f"none of the {len(held.clips)} clips of the held-out dataset "
                                   f"{held.label} is tokenized with {tokenizer_id}, the base model's tokenizer")
        videos = {c.video_id or c.clip_id for c in held.clips}
        train = [c for c in sel.clips if (c.video_id or c.clip_id) not in videos]
        if not train:
            raise PosttrainRefused(422, "no_clips", f"every one of the {len(sel.clips)} selected clips belongs to an "
                                   f"episode of the held-out dataset {held.label}; nothing is left to train on")
        return train, val, held.label

    def _base(self, req: PosttrainRequest) -> WorldModelRecord:
        base = self.registry.raw(req.base_model)  # ModelNotFound: 404
        if base.state != "succeeded":
            raise PosttrainRefused(409, "model_not_ready", f"base model {base.model_id} is {base.state} "
                                   f"({base.percent:.0f}% done); post-train a finished model")
        if req.tokenizer_id is not None and req.tokenizer_id != base.lineage.tokenizer_id:
            raise PosttrainRefused(422, "tokenizer_mismatch", f"base model {base.model_id} works on tokenizer "
                                   f"{base.lineage.tokenizer_id}, not {req.tokenizer_id}: its tokens mean nothing "
                                   "in another tokenizer's space (pretrain a base on that tokenizer)")
        if has_adapter(self.store, base.model_id):
            raise PosttrainRefused(422, "base_is_adapter", f"base model {base.model_id} is a LoRA adapter on "
                                   f"{base.lineage.parent_model}; post-train a plain model (its base, or a merged "
                                   "post-training with merge: true)")
        return base

    def _select(self, req: PosttrainRequest) -> tuple[Selection, SearchRequest | None, list[str] | None]:
        """The clips, the search that found them (None for a dataset / filter) and the hits to save."""
        if req.search is None:
            sel = select_clips(self.store, req.dataset, req.clips, self.resources.max_clips)
            query = None
            if sel.dataset and req.dataset is not None:  # a saved search keeps its query in the lineage
                manifest = read_dataset(self.store, req.dataset.name, req.dataset.version)
                query = SearchRequest.model_validate(manifest.query) if manifest.query else None
            return sel, query, None
        query = SearchRequest.model_validate(req.search.model_dump(exclude={"save_as"}))
        hits = [h.clip_id for h in self._search().search(query).hits]
        if not hits:
            raise PosttrainRefused(422, "empty_search", "the search found no clips; nothing to post-train on")
        sel = select_clip_ids(self.store, hits, self.resources.max_clips)
        sel.label = "search"
        return sel, query, [c.clip_id for c in sel.clips]

    def _check_mode(self, req: PosttrainRequest, base: WorldModelRecord, sel: Selection) -> dict[str, Any] | None:
        """What the mode needs of the data: captions, actions (returns their spec) or rewards."""
        if req.mode == "supervised":
            missing = uncaptioned(self.store, sel.clips)
            if missing:
                raise PosttrainRefused(422, "no_captions", f"{len(missing)} of {len(sel.clips)} selected clips have "
                                       f"no caption (e.g. {missing[0]}); supervised post-training feeds them as text")
            return None
        videos = sorted({c.video_id for c in sel.clips})
        base_spec = _spec(base.config.get("action"))
        if req.mode == "reward":
            for video in videos:
                arrays = load_episode_arrays(self.store, video) if video else None
                if arrays is None or "rewards" not in arrays:
                    raise PosttrainRefused(422, "no_rewards", f"episode {video or '?'} has no recorded rewards; "
                                           "reward post-training needs labelled episodes")
            if base_spec is None:
                return None
        if req.mode not in ("action", "reward"):
            return None
        specs = {v: episode_action_spec(self.store, v) if v else None for v in videos}
        missing = [v for v, s in specs.items() if s is None]
        if missing:
            raise PosttrainRefused(422, "no_actions", f"{len(missing)} of {len(videos)} episodes have no recorded "
                                   f"actions (e.g. {missing[0] or '?'}); mode {req.mode} needs them")
        kinds = {s for s in specs.values() if s is not None}
        if len(kinds) > 1:
            raise PosttrainRefused(422, "mixed_actions", f"the episodes have {len(kinds)} different action spaces; "
                                   "post-train one embodiment at a time (narrow the data)")
        spec = kinds.pop()
        if req.action is not None and _spec(req.action.spec()) != spec:
            raise PosttrainRefused(422, "action_spec_mismatch", f"the request's action space {req.action.spec()} is "
                                   f"not the episodes' ({_words(spec)})")
        if not req.resize_actions and not (base_spec == spec or fits(base_spec, spec)):
            have = "takes no actions" if base_spec is None else f"takes {_words(base_spec)}"
            raise PosttrainRefused(422, "action_mismatch", f"the base model {have}; these episodes have "
                                   f"{_words(spec)}: set resize_actions to give it a new action encoder")
        return {"kind": spec.kind, "dim": spec.dim, "num_actions": spec.num_actions}

    def _model_config(self, req: PosttrainRequest, base: WorldModelRecord,
                      action: dict[str, Any] | None) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The post-trained model's config and new modules, from the base's architecture built without
        weights (``meta`` device): what the mode adds, what the method trains, refused if it cannot."""
        try:
            model = build_skeleton(base.family, base.config)
            with torch.device("meta"):
                new, _ = apply_mode(model, req.mode, action, resize=req.resize_actions)
            if req.method == "lora":
                targets = tuple(req.lora.target_modules) if req.lora and req.lora.target_modules else None
                resolve_targets(model, targets, new)
            elif req.method == "heads" and not (model.conditioning_modules() or new):
                raise PosttrainError("no_heads", f"this {model.description} base has no action / text conditioning "
                                     "and no reward head to train with method 'heads'")
        except PosttrainError as exc:
            raise _refusal(exc) from None
        except ValueError as exc:
            raise PosttrainRefused(422, "bad_config", f"base model {base.model_id}: {exc}") from None
        return model.config.to_dict(), new

    # ------------------------------------------------------------------------------------- run, finish

    def worker(self, record: WorldModelRecord, plan: dict[str, Any]) -> WorkerSpec:
        req = PosttrainRequest.model_validate(record.request)
        return worker_spec(record.job_id, world_model_prefix(record.job_id), posttrain_loop, plan, req.workers,
                           req.use_gpu)

    def model_key(self, job_id: str) -> str:
        record = self.registry.raw(job_id)
        keeps_adapter = (record.request or {}).get("method") == "lora" and not (record.request or {}).get("merge")
        return world_model_adapter_key(job_id) if keeps_adapter else world_model_key(job_id)

    def announce(self, record: WorldModelRecord) -> None:
        payload = events.ModelTrained(
            model_id=record.model_id, name=record.name, family=record.family, size=record.size,
            tokenizer_id=record.lineage.tokenizer_id, model_uri=record.model_uri or "",
            datasets=record.lineage.datasets, parent_model=record.lineage.parent_model or "", metrics=record.metrics,
            steps=int(record.metrics.get("train_steps", record.total_steps)))
        env = events.new_event("posttrain", payload,
                               lineage=[record.lineage.parent_model or "", record.lineage.tokenizer_id,
                                        *record.lineage.datasets],
                               event_id=events.effect_id(events.TOPIC_MODELS_TRAINED, record.model_id))
        self.bus.publish(events.TOPIC_MODELS_TRAINED, env, record.model_id)


def _spec(value: Any) -> ActionSpec | None:
    if value is None:
        return None
    if isinstance(value, ActionSpec):
        return value
    return ActionSpec(value["kind"], dim=int(value.get("dim") or 0), num_actions=int(value.get("num_actions") or 0))


def _words(spec: ActionSpec) -> str:
    return f"continuous actions of width {spec.dim}" if spec.kind == "continuous" else \
        f"discrete actions ({spec.num_actions} ids)"


class PosttrainService:
    def __init__(self, store: ObjectStore, store_settings: StoreSettings, bus: Bus, settings: PosttrainSettings,
                 index: VectorIndex | None = None) -> None:
        self.store, self.bus, self.settings = store, bus, settings
        self.registry = WorldModelRegistry(store)
        self._index, self._lock = index, threading.Lock()
        self._search: ClipSearch | None = None
        self.jobs = JobManager(store, self.registry, PosttrainJobs(store, bus, self.registry, settings, self.search),
                               settings.training, launcher=job_launcher(settings.training, store_settings),
                               owns=lambda r: bool(r.lineage.posttrain))

    def search(self) -> ClipSearch:
        """The clip search (opened on the first job given as a search: the vector index and, for text, MiniLM)."""
        with self._lock:
            if self._search is None:
                from worldloom.models.text_embedder import DIM as TEXT_DIM
                from worldloom.video import visual_embed

                index = self._index or VectorIndex.from_settings(self.settings.vectors)
                for spec in clip_collections(visual_embed.DIM, TEXT_DIM):
                    index.ensure_collection(spec)
                self._search = ClipSearch(index, self.store, self.bus, embed_text=_embed_text,
                                          embed_image=visual_embed.embed_image_bytes,
                                          max_top_k=self.settings.max_search_top_k,
                                          max_dataset_clips=self.settings.training.max_clips, source="posttrain")
            return self._search

    def model(self, model_id: str) -> WorldModelRecord:
        """A finished model (409 while its job is not)."""
        record = self.registry.get(model_id)
        if record.state != "succeeded":
            raise PosttrainRefused(409, "model_not_ready", f"model {model_id} is {record.state} "
                                   f"({record.percent:.0f}% done)")
        return record

    def close(self) -> None:
        self.jobs.close()


def _embed_text(text: str) -> np.ndarray:
    from worldloom.models.text_embedder import shared_text_embedder

    return shared_text_embedder().encode_one(text)

