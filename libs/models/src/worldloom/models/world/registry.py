"""The world-model registry: one record per model with lineage, kept in the object store.

  models/<id>/record.json      ModelRecord (request, config, lineage, state set by the train service)
  models/<id>/progress.json    written by the Ray workers (step, curves, final metrics)
  models/<id>/checkpoints/     safetensors checkpoints every N steps (resume)
  models/<id>/model/           world_model.safetensors + world_model.json (the served model)

The train service writes records; the generate service (and the CLI) only read them and load models.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from torch import nn

from worldloom.core.jobs import JobRecord, count_finished, read_progress
from worldloom.core.store.base import InvalidKey, ObjectNotFound, ObjectStore
from worldloom.models.tokenizer import CausalVideoTokenizer, CheckpointError
from worldloom.models.tokenizer.job import load_tokenizer
from worldloom.models.world.job import MODEL_FILE, load_world_checkpoint

ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


def model_prefix(model_id: str) -> str:
    return f"models/{model_id}"


def record_key(model_id: str) -> str:
    return f"{model_prefix(model_id)}/record.json"


class ModelNotFound(LookupError):
    pass


class ModelNotReady(RuntimeError):
    pass


class ModelLineage(BaseModel):
    datasets: list[str] = Field(default_factory=list, description="dataset names/versions or clip filters used")
    clip_filter: dict[str, Any] | None = None
    tokenizer_id: str = ""
    parent_model: str | None = None
    clip_ids_sha256: str = ""
    train_clips: int = 0
    val_clips: int = 0


class ModelRecord(JobRecord):
    model_id: str
    name: str
    family: Literal["ar", "diffusion"]
    size: str = "tiny"
    config: dict[str, Any]
    request: dict[str, Any] | None = None
    lineage: ModelLineage = Field(default_factory=ModelLineage)
    model_uri: str | None = None
    throughput: dict[str, float] = Field(default_factory=dict, description="latest training throughput")


def _check_id(model_id: str) -> str:
    if not model_id or len(model_id) > 64 or not set(model_id) <= ID_CHARS:
        raise ModelNotFound(f"no model {model_id!r}")
    return model_id


class ModelRegistry:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._lock = threading.RLock()

    def save(self, record: ModelRecord) -> None:
        with self._lock:
            record.updated_at = datetime.now(timezone.utc)
            self.store.put_bytes(record_key(record.model_id), record.model_dump_json(indent=1).encode(),
                                 "application/json")

    def raw(self, model_id: str) -> ModelRecord:
        try:
            return ModelRecord.model_validate_json(self.store.get_bytes(record_key(_check_id(model_id))))
        except (ObjectNotFound, InvalidKey, ValueError):
            raise ModelNotFound(f"no model {model_id!r}") from None

    def get(self, model_id: str) -> ModelRecord:
        record = self.raw(model_id)
        merged = record.merged(read_progress(self.store, model_prefix(model_id)))
        rate = {k: v[-1][1] for k, v in merged.curves.items() if k.endswith("_per_s") and v}
        return merged.model_copy(update={"throughput": rate}) if rate else merged

    def list(self) -> list[ModelRecord]:
        ids = sorted({i.key.split("/")[1] for i in self.store.list("models/")
                      if i.key.endswith("/record.json") and i.key.count("/") == 2})
        return sorted((self.get(i) for i in ids), key=lambda r: r.created_at, reverse=True)

    def update(self, model_id: str, **changes: Any) -> ModelRecord:
        with self._lock:
            record = self.raw(model_id).model_copy(update=changes)
            self.save(record)
            count_finished("world_model", changes)
            return record


@dataclass
class LoadedWorldModel:
    record: ModelRecord
    model: nn.Module
    tokenizer: CausalVideoTokenizer


def load_world_model(store: ObjectStore, model_id: str, device: str = "cpu") -> LoadedWorldModel:
    """A finished model and its tokenizer, ready for inference (eval mode). Raises ModelNotFound /
    ModelNotReady / CheckpointError with a sentence saying what is wrong."""
    record = ModelRegistry(store).get(model_id)
    if record.state != "succeeded":
        raise ModelNotReady(f"model {model_id} is {record.state} ({record.percent:.0f}% done)")
    key = f"{model_prefix(model_id)}/model/{MODEL_FILE}"
    with tempfile.TemporaryDirectory(prefix="wl-wm-") as tmp:
        local = Path(tmp) / MODEL_FILE
        try:
            store.download(key, str(local))
            store.download(key.replace(".safetensors", ".json"), str(local.with_suffix(".json")))
        except ObjectNotFound:
            raise CheckpointError(f"model {model_id}: {key} or its sidecar is missing from the store") from None
        model, _ = load_world_checkpoint(local, device=device)
    tokenizer = load_tokenizer(store, record.lineage.tokenizer_id, device)
    return LoadedWorldModel(record, model.eval(), tokenizer)
