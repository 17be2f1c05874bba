"""The tokenize service's logic: training jobs and the registry, activation with backfill, imports, and
the encode / decode / evaluate operations behind the HTTP routes. Refusals are :class:`TokenizeError`."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from pathlib import Path

import numpy as np

from worldloom.core.bus import Bus
from worldloom.core.catalog import model_dir, tokenizer_model_key, tokenizer_prefix
from worldloom.core.claims import Claims
from worldloom.core.store import ObjectStore
from worldloom.models.checkpoint import publish_files
from worldloom.models.tokenizer import CheckpointError, load_checkpoint, save_checkpoint
from worldloom.models.tokenizer.job import MODEL_FILE
from worldloom.models.training.driver import job_launcher
from worldloom.tokenize.clip_encoder import ClipEncoder
from worldloom.tokenize.codec import (
    Encoded,
    TokenizerCache,
    decode_array,
    encode_frames,
    reconstruction_quality,
    square_frames,
)
from worldloom.tokenize.errors import TokenizeError
from worldloom.tokenize.jobs import TokenizerJobManager, TokenizerJobs
from worldloom.tokenize.registry import Lineage, TokenizerRecord, TokenizerRegistry
from worldloom.tokenize.settings import TokenizeSettings


class TokenizeService:
    def __init__(self, store: ObjectStore, bus: Bus, settings: TokenizeSettings) -> None:
        self.store, self.bus, self.settings = store, bus, settings
        self.registry = TokenizerRegistry(store)
        self.cache = TokenizerCache(store, self.registry, settings.model_cache)
        self.encoder = ClipEncoder(store, bus, self.registry, self.cache, settings.encode_max_frames,
                                   claims=Claims(store, lease_s=settings.claim_lease_s))
        hooks = TokenizerJobs(store, settings.store, self.registry, settings.training, on_activate=self.start_backfill)
        self.jobs = TokenizerJobManager(store, self.registry, hooks, settings.training,
                                        launcher=job_launcher(settings.training, settings.store))

    def resolve(self, tokenizer_id: str | None) -> str:
        tokenizer_id = tokenizer_id or self.registry.active_id()
        if not tokenizer_id:
            raise TokenizeError(409, "no_active_tokenizer", "name a tokenizer_id or activate one first")
        return tokenizer_id

    def resolution_of(self, tokenizer_id: str, requested: int | None) -> int:
        record = self.registry.get(tokenizer_id)
        s = int(record.config.get("compression", "4x8x8").split("x")[1])
        res = requested or int((record.request or {}).get("resolution") or 64)
        if res % s or res > self.settings.encode_max_resolution or res < s:
            raise TokenizeError(422, "bad_resolution", f"resolution must be a multiple of {s} between {s} and "
                                f"{self.settings.encode_max_resolution}, got {res}")
        return res

    # --------------------------------------------------------------------------------------- registry

    def activate(self, tokenizer_id: str) -> TokenizerRecord:
        record = self.registry.activate(tokenizer_id)
        self.start_backfill(tokenizer_id)
        return record

    def import_checkpoint(self, path: Path, filename: str | None, name: str) -> TokenizerRecord:
        """Register an uploaded safetensors tokenizer; anything else (a pickle, a zip, garbage) is refused."""
        try:
            model, _ = load_checkpoint(path)  # validates the framing first, never unpickles
        except CheckpointError as exc:
            raise TokenizeError(422, "bad_checkpoint", str(exc)) from None
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        tokenizer_id = f"tok-{digest[:12]}"
        if self.registry.exists(tokenizer_id):
            return self.registry.get(tokenizer_id)
        with tempfile.TemporaryDirectory(prefix="wl-import-") as tmp:
            save_checkpoint(Path(tmp) / MODEL_FILE, model)  # re-serialised: no foreign metadata
            publish_files(self.store, Path(tmp), model_dir(tokenizer_prefix(tokenizer_id)))
        record = TokenizerRecord(tokenizer_id=tokenizer_id, name=name, source="imported", state="succeeded",
                                 config=model.config.to_dict(), percent=100.0,
                                 lineage=Lineage(imported_from=(filename or "upload")[:200]),
                                 model_uri=self.store.uri(tokenizer_model_key(tokenizer_id)), announced=True)
        self.registry.save(record)
        return self.registry.get(tokenizer_id)

    def start_backfill(self, tokenizer_id: str) -> threading.Thread:
        thread = threading.Thread(target=self.encoder.backfill, args=(tokenizer_id,), name="tokenize-backfill",
                                  daemon=True)
        thread.start()
        return thread

    def resume(self) -> None:
        """At start-up: unfinished training jobs, and the active tokenizer's interrupted backfill."""
        self.jobs.resume_unfinished()
        threading.Thread(target=self.encoder.resume_backfill, name="tokenize-backfill", daemon=True).start()

    # ------------------------------------------------------------------------------------------ codec

    def encode(self, path: Path, tokenizer_id: str | None, resolution: int | None) -> tuple[str, Encoded]:
        tid = self.resolve(tokenizer_id)
        res = self.resolution_of(tid, resolution)
        model = self.cache.get(tid)
        mf = self.settings.encode_max_frames
        return tid, encode_frames(model, square_frames(path, res, mf), mf)

    def evaluate(self, path: Path, tokenizer_id: str | None, resolution: int | None) -> tuple[str, int, dict[str, float]]:
        tid = self.resolve(tokenizer_id)
        res = self.resolution_of(tid, resolution)
        mf = self.settings.encode_max_frames
        return tid, res, reconstruction_quality(self.cache.get(tid), square_frames(path, res, mf), mf)

    def decode(self, tokenizer_id: str | None, array: np.ndarray) -> tuple[str, np.ndarray]:
        tid = self.resolve(tokenizer_id)
        return tid, decode_array(self.cache.get(tid), array, self.settings.max_decode_tokens)

    def compression_of(self, tokenizer_id: str) -> str:
        return self.cache.get(tokenizer_id).config.compression

    def close(self) -> None:
        self.jobs.close()
