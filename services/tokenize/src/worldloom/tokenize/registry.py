"""The tokenizer registry: one record per tokenizer with its lineage, kept in the object store.

  tokenizers/<id>/job.json        TokenizerRecord (request, config, lineage, state set by the service)
  tokenizers/<id>/progress.json   written by the training workers (step, curves, final metrics)
  tokenizers/<id>/checkpoints/    safetensors checkpoints every N steps (resume)
  tokenizers/<id>/model/          the final tokenizer.safetensors + tokenizer.json
  tokenizers/active.json          which tokenizer encodes clips.curated events
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worldloom.core.jobs import JobRecord, count_finished, read_progress
from worldloom.core.selection import ClipFilter, DatasetRef
from worldloom.core.store.base import ObjectNotFound, ObjectStore
from worldloom.models.tokenizer.model import COMPRESSIONS, SIZES
from worldloom.tokenize.errors import TokenizeError

ACTIVE_KEY = "tokenizers/active.json"
ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,63}$"


def prefix(tokenizer_id: str) -> str:
    return f"tokenizers/{tokenizer_id}"


def record_key(tokenizer_id: str) -> str:
    return f"{prefix(tokenizer_id)}/job.json"


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("tokenizer", min_length=1, max_length=100)
    dataset: DatasetRef | None = Field(None, description="a saved dataset manifest (from search)")
    clips: ClipFilter | None = Field(None, description="or a filter over curated clips")
    kind: Literal["continuous", "discrete"] = "continuous"
    compression: str = Field("4x8x8", description=f"one of {sorted(COMPRESSIONS)}")
    size: str = Field("tiny", description=f"one of {sorted(SIZES)}")
    fsq_levels: list[int] | None = Field(None, min_length=1, max_length=12, description="discrete only")
    latent_channels: int | None = Field(None, ge=1, le=256, description="continuous only")
    resolution: int = Field(64, ge=16, le=512)
    frames: int = Field(17, ge=1, le=129, description="clip length per sample: 1 + k * temporal compression")
    steps: int = Field(500, ge=1)
    batch: int = Field(4, ge=1, le=256)
    num_images: int = Field(2, ge=0, le=256, description="extra single frames per batch (joint image+video)")
    lr: float = Field(1e-3, gt=0, le=1)
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    val_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    augment: bool = True
    activate: bool = Field(False, description="make it the tokenizer for clips.curated once trained")

    @model_validator(mode="after")
    def _check(self) -> TrainRequest:
        if (self.dataset is None) == (self.clips is None):
            raise ValueError("give exactly one of 'dataset' or 'clips'")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}")
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}")
        return self


class Lineage(BaseModel):
    dataset: str | None = Field(None, description="name@vN of the dataset manifest, or null for a clip filter")
    dataset_uri: str | None = None
    clip_filter: dict[str, Any] | None = None
    clip_ids_sha256: str = ""
    train_clips: int = 0
    val_clips: int = 0
    imported_from: str | None = Field(None, description="uploaded file name, for imported tokenizers")


class TokenizerRecord(JobRecord):
    tokenizer_id: str
    name: str
    source: Literal["trained", "imported"] = "trained"
    config: dict[str, Any]
    request: dict[str, Any] | None = None
    lineage: Lineage = Field(default_factory=Lineage)
    model_uri: str | None = None
    active: bool = False


class Registry:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._lock = threading.RLock()

    def save(self, record: TokenizerRecord) -> None:
        with self._lock:
            record.updated_at = datetime.now(timezone.utc)
            self.store.put_bytes(record_key(record.tokenizer_id), record.model_dump_json(indent=1).encode(),
                                 "application/json")

    def exists(self, tokenizer_id: str) -> bool:
        return self.store.exists(record_key(tokenizer_id))

    def raw(self, tokenizer_id: str) -> TokenizerRecord:
        try:
            return TokenizerRecord.model_validate_json(self.store.get_bytes(record_key(tokenizer_id)))
        except (ObjectNotFound, ValueError):
            raise TokenizeError(404, "tokenizer_not_found", f"no tokenizer {tokenizer_id!r}") from None

    def get(self, tokenizer_id: str) -> TokenizerRecord:
        record = self.raw(tokenizer_id)
        merged = record.merged(read_progress(self.store, prefix(tokenizer_id)) if record.source == "trained" else None)
        merged.active = self.active_id() == tokenizer_id
        return merged

    def list(self) -> list[TokenizerRecord]:
        ids = sorted({info.key.split("/")[1] for info in self.store.list("tokenizers/")
                      if info.key.endswith("/job.json") and info.key.count("/") == 2})
        records = [self.get(i) for i in ids]
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    def update(self, tokenizer_id: str, **changes: Any) -> TokenizerRecord:
        with self._lock:
            record = self.raw(tokenizer_id).model_copy(update=changes)
            self.save(record)
            count_finished("tokenizer", changes)
            return record

    def active_id(self) -> str | None:
        try:
            return json.loads(self.store.get_bytes(ACTIVE_KEY))["tokenizer_id"]
        except (ObjectNotFound, ValueError, KeyError):
            return None

    def activate(self, tokenizer_id: str) -> TokenizerRecord:
        record = self.get(tokenizer_id)
        if record.state != "succeeded":
            raise TokenizeError(409, "tokenizer_not_ready", f"tokenizer {tokenizer_id} is {record.state}, "
                                "only a finished tokenizer can be activated")
        self.store.put_bytes(ACTIVE_KEY, json.dumps({"tokenizer_id": tokenizer_id}).encode(), "application/json")
        record.active = True
        return record
