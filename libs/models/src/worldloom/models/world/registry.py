"""The world-model registry: one record per model with lineage, on the job platform's registry.

  models/<id>/record.json      WorldModelRecord (request, config, lineage, state set by the train service)
  models/<id>/plan.json        the frozen job (exact train/val shards, model config)
  models/<id>/progress.json    written by the Ray workers (step, curves, final metrics)
  models/<id>/checkpoints/     safetensors checkpoints every N steps (resume)
  models/<id>/model/           world_model.safetensors + world_model.json (the served model)

The train service writes records; the generate service (and the CLI) only read them and load models.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from worldloom.core.catalog import WORLD_MODEL_RECORD, WORLD_MODELS_ROOT, world_model_key
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
    parent_model: str | None = None


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


def load_world_model(store: ObjectStore, model_id: str, device: str = "cpu") -> LoadedWorldModel:
    """A finished model and its tokenizer, ready for inference (eval mode). Raises ModelNotFound /
    ModelNotReady / CheckpointError with a sentence saying what is wrong."""
    record = WorldModelRegistry(store).get(model_id)
    if record.state != "succeeded":
        raise ModelNotReady(f"model {model_id} is {record.state} ({record.percent:.0f}% done)")
    key = world_model_key(model_id)
    with tempfile.TemporaryDirectory(prefix="wl-wm-") as tmp:
        try:
            local = fetch_files(store, key, Path(tmp))
        except ObjectNotFound:
            raise CheckpointError(f"model {model_id}: {key} or its sidecar is missing from the store") from None
        model, _ = load_world_checkpoint(local, device=device)
    tokenizer = load_tokenizer(store, record.lineage.tokenizer_id, device)
    return LoadedWorldModel(record, model.eval(), tokenizer)
