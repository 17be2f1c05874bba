"""Exactly once across workers: two tokenize "replicas" (separate encoders, caches and claim owners on one
store), each running a backfill and consuming clips.curated for the same clips at the same time, encode
every clip once and emit one clips.tokenized per clip; only one backfill runs."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import ACTIVE_TOKENIZER_KEY, backfill_done_key, token_marker_key
from worldloom.core.claims import Claims
from worldloom.core.store.local import LocalStore
from worldloom.testkit.clips import synthetic_clip
from worldloom.testkit.models import put_tokenizer
from worldloom.tokenize import clip_encoder
from worldloom.tokenize.clip_encoder import ClipEncoder, curated_event_of
from worldloom.tokenize.codec import TokenizerCache
from worldloom.tokenize.registry import TokenizerRecord, TokenizerRegistry

N = 6


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = LocalStore(tmp_path / "store")
    tok = put_tokenizer(store, "tok-d", "discrete", tmp_path)
    TokenizerRegistry(store).save(TokenizerRecord(tokenizer_id="tok-d", name="t", source="imported",
                                                  state="succeeded", config=tok.config.to_dict(),
                                                  request={"resolution": 16}, announced=True))
    store.put_bytes(ACTIVE_TOKENIZER_KEY, b'{"tokenizer_id": "tok-d"}')
    clips = [synthetic_clip(store, tmp_path, i, frames=9, size=16) for i in range(N)]
    encodes: Counter[str] = Counter()
    real = clip_encoder.encode_frames

    def slow_encode(model: Any, frames: Any, max_frames: int) -> Any:  # counts, and widens the race window
        encodes[threading.current_thread().name] += 1
        time.sleep(0.15)
        return real(model, frames, max_frames)

    monkeypatch.setattr(clip_encoder, "encode_frames", slow_encode)
    return store, clips, encodes


def _replica(store: LocalStore, bus: InProcessBus, name: str) -> ClipEncoder:
    registry = TokenizerRegistry(store)
    return ClipEncoder(store, bus, registry, TokenizerCache(store, registry), 40,
                       claims=Claims(store, owner=name, lease_s=30), wait_s=30)


def test_consumers_and_backfills_of_two_replicas_encode_each_clip_once(setup) -> None:
    store, clips, encodes = setup
    bus = InProcessBus()
    replicas = [_replica(store, bus, "a"), _replica(store, bus, "b")]
    backfills: list[object] = []
    work = [threading.Thread(target=lambda r=r: backfills.append(r.backfill("tok-d")), name=f"backfill-{i}")
            for i, r in enumerate(replicas)]
    for i, r in enumerate(replicas):
        for rec in reversed(clips):  # the consumers meet the backfills in the middle
            env = events.new_event("curate", curated_event_of(store, rec))
            work.append(threading.Thread(target=r.handle_event, args=(env,), name=f"consumer-{i}-{rec.clip_id}"))
    for t in work:
        t.start()
    for t in work:
        t.join(60)
    assert all(store.exists(token_marker_key("tok-d", rec.clip_id)) for rec in clips)
    assert sum(encodes.values()) == N, encodes  # one encode per clip, whoever did it
    emitted = [m.key for m in bus.messages(events.TOPIC_CLIPS_TOKENIZED)]
    assert sorted(emitted) == sorted(rec.clip_id for rec in clips), emitted  # one event per clip
    assert backfills.count(None) == 1 and len(backfills) == 2  # the second backfill did not run
    assert store.exists(backfill_done_key("tok-d"))


def test_a_redelivered_event_after_a_lost_marker_is_the_same_event(setup) -> None:
    store, clips, encodes = setup
    bus = InProcessBus()
    replica = _replica(store, bus, "a")
    env = events.new_event("curate", curated_event_of(store, clips[0]))
    replica.handle_event(env)
    store.delete(token_marker_key("tok-d", clips[0].clip_id))  # a crash between the event and the marker
    replica.handle_event(env)
    first, second = (events.decode(m.value) for m in bus.messages(events.TOPIC_CLIPS_TOKENIZED))
    assert first.event_id == second.event_id  # consumers drop the copy by id
    assert sum(encodes.values()) == 1  # the shard was there: not encoded again
