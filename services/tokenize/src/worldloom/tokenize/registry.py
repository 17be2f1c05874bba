"""The tokenizer registry: one record per tokenizer with its lineage, on the job platform's registry.

  tokenizers/<id>/job.json        TokenizerRecord (request, config, lineage, state set by the service)
  tokenizers/<id>/plan.json       the frozen job (exact train/val clips, tokenizer config)
  tokenizers/<id>/progress.json   written by the training workers (step, curves, final metrics)
  tokenizers/<id>/checkpoints/    safetensors checkpoints every N steps (resume)
  tokenizers/<id>/model/          the final tokenizer.safetensors + tokenizer.json
  tokenizers/active.json          which tokenizer encodes clips.curated events
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from worldloom.core.catalog import ACTIVE_TOKENIZER_KEY, TOKENIZER_RECORD, TOKENIZERS_ROOT
from worldloom.core.jobs import DataLineage, JobNotFound, JobRecord, JobRegistry, read_progress
from worldloom.core.store.base import ObjectNotFound, ObjectStore
from worldloom.tokenize.errors import TokenizeError


class TokenizerNotFound(JobNotFound):
    code_name = "tokenizer_not_found"


class Lineage(DataLineage):
    dataset: str | None = Field(None, description="name@vN of the dataset manifest, or null for a clip filter")
    dataset_uri: str | None = None
    imported_from: str | None = Field(None, description="uploaded file name, for imported tokenizers")


class TokenizerRecord(JobRecord):
    id_field = "tokenizer_id"

    tokenizer_id: str
    source: Literal["trained", "imported"] = "trained"
    lineage: Lineage = Field(default_factory=Lineage)
    active: bool = False


class TokenizerRegistry(JobRegistry[TokenizerRecord]):
    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store, TokenizerRecord, root=TOKENIZERS_ROOT, record_file=TOKENIZER_RECORD,
                         not_found=TokenizerNotFound, kind="tokenizer")

    def get(self, tokenizer_id: str) -> TokenizerRecord:
        record = self.raw(tokenizer_id)
        if record.source == "trained":
            record = record.merged(read_progress(self.store, self.prefix(tokenizer_id)))
        record.active = self.active_id() == tokenizer_id
        return record

    def active_id(self) -> str | None:
        try:
            return json.loads(self.store.get_bytes(ACTIVE_TOKENIZER_KEY))["tokenizer_id"]
        except (ObjectNotFound, ValueError, KeyError):
            return None

    def activate(self, tokenizer_id: str) -> TokenizerRecord:
        record = self.get(tokenizer_id)
        if record.state != "succeeded":
            raise TokenizeError(409, "tokenizer_not_ready", f"tokenizer {tokenizer_id} is {record.state}, "
                                "only a finished tokenizer can be activated")
        self.store.put_bytes(ACTIVE_TOKENIZER_KEY, json.dumps({"tokenizer_id": tokenizer_id}).encode(),
                             "application/json")
        record.active = True
        return record
