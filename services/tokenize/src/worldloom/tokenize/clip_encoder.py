"""clips.curated -> token/latent shards + clips.tokenized, idempotent per (clip, tokenizer).

A claim per (clip, tokenizer) in the object store makes the consumer, backfills and replicas encode each
clip once. Writes happen in the order shard -> event -> marker, so a crash at any point is repaired by
the redelivered event: a marker means done (nothing happens), a shard without a marker means the event
may not have gone out (it is emitted again with the same, effect-derived event id; the clip is not
encoded again).

  tokens/<tokenizer_id>/<clip_id>.tar    webdataset shard: <clip_id>.tokens.npy | .latents.npy + .json
  tokens/<tokenizer_id>/<clip_id>.done   marker (the event that was emitted)
(keys: ``worldloom.core.catalog.token_shard_key`` / ``token_marker_key``)
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import tempfile
import time
from typing import Any

from worldloom.core import events
from worldloom.core.bus import Bus, PermanentError
from worldloom.core.catalog import (
    TRAIN_RENDITION,
    ClipRecord,
    backfill_claim_key,
    backfill_done_key,
    iter_clip_records,
    token_claim_key,
    token_marker_key,
    token_shard_key,
)
from worldloom.core.claims import Claims
from worldloom.core.errors import Refusal
from worldloom.core.store.base import ObjectNotFound, ObjectStore
from worldloom.models.tokenizer.shards import write_shard
from worldloom.tokenize.codec import TokenizerCache, encode_frames, square_frames
from worldloom.tokenize.errors import TokenizeError
from worldloom.tokenize.registry import TokenizerRegistry

log = logging.getLogger("worldloom.tokenize.clips")


class ClipBusy(RuntimeError):
    """Another worker (thread, process or replica) holds the clip's claim and is encoding it."""


class ClipEncoder:
    def __init__(self, store: ObjectStore, bus: Bus, registry: TokenizerRegistry, cache: TokenizerCache,
                 max_frames: int, claims: Claims | None = None, wait_s: float = 600.0) -> None:
        self.store, self.bus, self.registry, self.cache, self.max_frames = store, bus, registry, cache, max_frames
        self.claims = claims or Claims(store, lease_s=300.0)
        self.wait_s = wait_s

    def handle_event(self, env: events.Envelope) -> None:
        if env.WhichOneof("payload") != "clip_curated":
            raise PermanentError(f"tokenize does not handle {env.type}")
        tokenizer_id = self.registry.active_id()
        if tokenizer_id is None:
            return  # nothing to encode with yet; POST /v1/tokenizers/{id}/activate, then re-run curation
        try:
            self.encode_clip(env.clip_curated, tokenizer_id)
        except Refusal as exc:  # the clip or the tokenizer cannot be used: retrying will not help
            raise PermanentError(f"{exc.code}: {exc.message}") from None

    def encode_clip(self, clip: events.ClipCurated, tokenizer_id: str, *, wait: bool = True) -> events.Envelope | None:
        """Encode one curated clip; returns the emitted event, or None when it was (or got) done elsewhere.

        One claim per (clip, tokenizer) makes it one encode and one ``clips.tokenized`` however many
        consumers, backfills and replicas see the clip: a claimant that loses waits for the winner's marker
        (``wait``; a dead winner's lease runs out and the claim passes on) or raises :class:`ClipBusy`."""
        done = token_marker_key(tokenizer_id, clip.clip_id)
        deadline = time.monotonic() + self.wait_s
        while not self.store.exists(done):
            with self.claims.holding(token_claim_key(tokenizer_id, clip.clip_id), renew_every_s=self.claims.lease_s / 3) as claim:
                if claim is not None:
                    return None if self.store.exists(done) else self._encode(clip, tokenizer_id)
            if not wait or time.monotonic() > deadline:
                raise ClipBusy(f"clip {clip.clip_id} is being encoded with {tokenizer_id} by another worker")
            time.sleep(0.5)
        return None

    def _encode(self, clip: events.ClipCurated, tokenizer_id: str) -> events.Envelope:
        """Shard, then event, then marker (the caller holds the clip's claim)."""
        done, shard = token_marker_key(tokenizer_id, clip.clip_id), token_shard_key(tokenizer_id, clip.clip_id)
        record = self.registry.get(tokenizer_id)
        resolution = int((record.request or {}).get("resolution") or clip.width or 64)
        if not self.store.exists(shard):
            uri = clip.renditions.get(TRAIN_RENDITION)
            if not uri:
                raise TokenizeError(422, "no_train_rendition", f"clip {clip.clip_id} has no training rendition")
            model = self.cache.get(tokenizer_id)
            fd, path = tempfile.mkstemp(suffix=".mp4", prefix="wl-clip-")
            os.close(fd)
            try:
                try:
                    self.store.download(self.store.key_from_uri(uri), path)
                except ObjectNotFound:
                    raise TokenizeError(422, "clip_missing", f"{uri} does not exist") from None
                encoded = encode_frames(model, square_frames(path, resolution, self.max_frames), self.max_frames)
            finally:
                os.unlink(path)
            meta: dict[str, Any] = {"clip_id": clip.clip_id, "video_id": clip.video_id, "tokenizer_id": tokenizer_id,
                    "kind": encoded.kind, "shape": list(encoded.array.shape), "frames": encoded.frames,
                    "resolution": encoded.resolution, "compression": model.config.compression,
                    "caption": clip.caption, "start_s": clip.start_s, "end_s": clip.end_s}
            self.store.put_bytes(shard, write_shard(clip.clip_id, encoded.kind, encoded.array, meta), "application/x-tar")
        else:
            meta = _shard_meta(self.store.get_bytes(shard), clip.clip_id)
        payload = events.ClipTokenized(
            clip_id=clip.clip_id, tokenizer_id=tokenizer_id, kind=meta["kind"], shard_uri=self.store.uri(shard),
            shape=meta["shape"], dtype="int32" if meta["kind"] == "discrete" else "float16",
            frames=meta["frames"], resolution=meta["resolution"], compression=meta["compression"])
        env = events.new_event("tokenize", payload, lineage=[clip.clip_id, tokenizer_id],
                               event_id=events.effect_id(events.TOPIC_CLIPS_TOKENIZED, tokenizer_id, clip.clip_id))
        self.bus.publish(events.TOPIC_CLIPS_TOKENIZED, env, clip.clip_id, wait=True)
        self.store.put_bytes(done, json.dumps({"event_id": env.event_id}).encode(), "application/json")
        return env

    def backfill(self, tokenizer_id: str) -> dict[str, int] | None:
        """Encode every accepted curated clip not yet done with ``tokenizer_id`` (runs after activation,
        so clips curated before any tokenizer was active are tokenized too). One backfill per tokenizer
        at a time across replicas (a claim); its counts are recorded when it completes, and a backfill a
        crash interrupted is run again at start-up (:meth:`resume_backfill`). Returns None when another
        worker is already backfilling."""
        with self.claims.holding(backfill_claim_key(tokenizer_id), renew_every_s=self.claims.lease_s / 3) as claim:
            if claim is None:
                log.info("a backfill with %s is already running elsewhere", tokenizer_id)
                return None
            counts = self._backfill(tokenizer_id)
            self.store.put_bytes(backfill_done_key(tokenizer_id), json.dumps(counts).encode(), "application/json")
            return counts

    def resume_backfill(self) -> dict[str, int] | None:
        """At start-up: finish the active tokenizer's backfill if it never completed."""
        tokenizer_id = self.registry.active_id()
        if tokenizer_id is None or self.store.exists(backfill_done_key(tokenizer_id)):
            return None
        return self.backfill(tokenizer_id)

    def _backfill(self, tokenizer_id: str) -> dict[str, int]:
        counts = {"encoded": 0, "skipped": 0, "busy": 0, "failed": 0}
        for rec in list(iter_clip_records(self.store)):
            try:
                if rec.status != "accepted" or TRAIN_RENDITION not in rec.renditions:
                    continue
                done = self.encode_clip(curated_event_of(self.store, rec), tokenizer_id, wait=False)
                counts["encoded" if done is not None else "skipped"] += 1
            except ClipBusy:  # its claimant (the consumer, another replica) finishes it
                counts["busy"] += 1
            except Exception:  # one bad clip must not stop the backfill
                log.exception("backfill of clip %s with %s failed", rec.clip_id, tokenizer_id)
                counts["failed"] += 1
        return counts


def curated_event_of(store: ObjectStore, rec: ClipRecord) -> events.ClipCurated:
    """The clips.curated payload for a stored clip record (backfill after a tokenizer is activated)."""
    return events.ClipCurated(
        clip_id=rec.clip_id, video_id=rec.video_id, start_frame=rec.start_frame, end_frame=rec.end_frame,
        start_s=rec.start_s, end_s=rec.end_s, config_hash=rec.config_hash,
        renditions={k: store.uri(v) for k, v in rec.renditions.items()}, caption=rec.caption, tags=rec.tags,
        width=int(rec.rendition_info.get(TRAIN_RENDITION, {}).get("width", 0)),
        height=int(rec.rendition_info.get(TRAIN_RENDITION, {}).get("height", 0)))


def _shard_meta(tar_bytes: bytes, clip_id: str) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = tar.extractfile(f"{clip_id}.json")
        assert member is not None
        return json.loads(member.read())
