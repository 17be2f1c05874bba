"""The world-model registry: one record per model with lineage, on the job platform's registry.

  models/<id>/record.json      WorldModelRecord (request, config, lineage, state set by the train service)
  models/<id>/plan.json        the frozen job (exact train/val shards, model config)
  models/<id>/progress.json    written by the Ray workers (step, curves, final metrics)
  models/<id>/checkpoints/     safetensors checkpoints every N steps (resume)
  models/<id>/model/           world_model.safetensors + world_model.json (the served model), or for a
                               LoRA post-trained model kept apart from its base only adapter.safetensors
                               + adapter.json (loaded onto the base, lineage.parent_model, when served)

The train and posttrain services write records; the generate service (and the CLI) only read them and load models.
"""

from __future__ import annotations

import copy
import json
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from worldloom.core.catalog import WORLD_MODEL_RECORD, WORLD_MODELS_ROOT, world_model_adapter_key, world_model_key
from worldloom.core.jobs import DataLineage, JobNotFound, JobRecord, JobRegistry
from worldloom.core.store.base import ObjectNotFound, ObjectStore
from worldloom.models.checkpoint import CheckpointError, fetch_files
from worldloom.models.tokenizer import CausalVideoTokenizer
from worldloom.models.tokenizer.job import load_tokenizer
from worldloom.models.world.base import WorldModel
from worldloom.models.world.factory import load_world_checkpoint


class ModelNotFound(JobNotFound):
    code_name = "model_not_found"


class ModelNotReady(RuntimeError):
    pass


class WorldModelLineage(DataLineage):
    datasets: list[str] = Field(default_factory=list, description="dataset names/versions or clip filters used")
    tokenizer_id: str = ""
    parent_model: str | None = Field(None, description="the base model a post-trained model started from")
    dataset_query: dict[str, Any] | None = Field(None, description="the search that selected the data (saved as "
                                                 "the dataset version in `datasets`)")
    posttrain: dict[str, Any] | None = Field(None, description="post-training: mode, method, LoRA options, "
                                             "action change, baselines")


class WorldModelRecord(JobRecord):
    id_field = "model_id"

    model_id: str
    family: Literal["ar", "diffusion"]
    size: str = "tiny"
    lineage: WorldModelLineage = Field(default_factory=WorldModelLineage)
    throughput: dict[str, float] = Field(default_factory=dict, description="latest training throughput")


class WorldModelRegistry(JobRegistry[WorldModelRecord]):
    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store, WorldModelRecord, root=WORLD_MODELS_ROOT, record_file=WORLD_MODEL_RECORD,
                         not_found=ModelNotFound, kind="model", metric_kind="world_model")

    def get(self, model_id: str) -> WorldModelRecord:
        merged = super().get(model_id)
        rate = {k: v[-1][1] for k, v in merged.curves.items() if k.endswith("_per_s") and v}
        return merged.model_copy(update={"throughput": rate}) if rate else merged


@dataclass
class LoadedWorldModel:
    record: WorldModelRecord
    model: WorldModel
    tokenizer: CausalVideoTokenizer


def stored_weights_sha256(store: ObjectStore, weights_key: str) -> str:
    """The SHA-256 a published checkpoint's sidecar records for its weights ('' when it has none)."""
    try:
        side = json.loads(store.get_bytes(weights_key.removesuffix(".safetensors") + ".json"))
    except (ObjectNotFound, ValueError):
        return ""
    return str((side.get("weights") or {}).get("sha256") or "")


def has_adapter(store: ObjectStore, model_id: str) -> bool:
    """Whether ``model_id`` is a LoRA post-trained model stored as an adapter on top of its base."""
    return store.exists(world_model_adapter_key(model_id))


class _BaseCache:
    """Base models that adapters are loaded onto, one copy per process (keyed by weights hash): serving
    several LoRA models of one base downloads and builds the base once; each model gets its own copy."""

    def __init__(self, size: int = 4) -> None:
        self.size, self._items, self._lock = size, OrderedDict[tuple[str, str, str], WorldModel](), threading.Lock()

    def get(self, store: ObjectStore, model_id: str, device: str) -> tuple[WorldModel, str]:
        key_ = world_model_key(model_id)
        sha = stored_weights_sha256(store, key_)
        key = (store.uri(key_), sha, device)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return copy.deepcopy(self._items[key]), sha
        model = _plain_model(store, model_id, key_, device)
        with self._lock:
            self._items[key] = model
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return copy.deepcopy(model), sha


    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


BASES = _BaseCache()


def _plain_model(store: ObjectStore, model_id: str, key: str, device: str) -> WorldModel:
    with tempfile.TemporaryDirectory(prefix="wl-wm-") as tmp:
        try:
            local = fetch_files(store, key, Path(tmp))
        except ObjectNotFound:
            raise CheckpointError(f"model {model_id}: {key} or its sidecar is missing from the store") from None
        model, _ = load_world_checkpoint(local, device=device)
    return model


def _adapter_model(store: ObjectStore, record: WorldModelRecord, device: str) -> WorldModel:
    from worldloom.models.posttrain.adapters import load_adapter

    base_id = record.lineage.parent_model
    if not base_id:
        raise CheckpointError(f"model {record.model_id}: an adapter without a base model in its lineage")
    base_record = WorldModelRegistry(store).get(base_id)
    if base_record.state != "succeeded":
        raise ModelNotReady(f"base model {base_id} of {record.model_id} is {base_record.state}")
    model, sha = BASES.get(store, base_id, device)
    key = world_model_adapter_key(record.model_id)
    with tempfile.TemporaryDirectory(prefix="wl-wm-") as tmp:
        try:
            local = fetch_files(store, key, Path(tmp))
        except ObjectNotFound:
            raise CheckpointError(f"model {record.model_id}: {key} or its sidecar is missing from the store") from None
        load_adapter(local, model, base_sha256=sha or None, device=device)
    return model


def load_world_model(store: ObjectStore, model_id: str, device: str = "cpu") -> LoadedWorldModel:
    """A finished model and its tokenizer, ready for inference (eval mode). A LoRA model kept as an adapter
    is its (cached) base with the adapter loaded on top, no merged copy. Raises ModelNotFound /
    ModelNotReady / CheckpointError with a sentence saying what is wrong."""
    record = WorldModelRegistry(store).get(model_id)
    if record.state != "succeeded":
        raise ModelNotReady(f"model {model_id} is {record.state} ({record.percent:.0f}% done)")
    if has_adapter(store, model_id):
        model = _adapter_model(store, record, device)
    else:
        model = _plain_model(store, model_id, world_model_key(model_id), device)
    tokenizer = load_tokenizer(store, record.lineage.tokenizer_id, device)
    return LoadedWorldModel(record, model.eval(), tokenizer)
