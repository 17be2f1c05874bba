"""Counting what a pipeline run produced, from the servers themselves: nothing lost, nothing doubled.

    tally = Ledger(pipeline, video_ids, tokenizer_id).count()
    assert not tally.lost and not tally.doubled, tally.report()

The expected set of every effect follows from the inputs: each uploaded video is stored once, announced
by one ``videos.ingested`` event and curated once (its marker names the accepted clips); each accepted
clip has one record with its renditions, one entry in one shard, one row in each Milvus collection, one
``clips.curated`` event and, with a tokenizer, one token shard with its marker and one ``clips.tokenized``
event. An event is counted by its id: a re-emit with the *same* id (a crash between the event and the
marker) is one event delivered twice, which consumers drop by id; a second id for the same effect is a
double. Dead letters are expected only for the poison messages named.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worldloom.testkit.pipeline import Pipeline


@dataclass
class Count:
    """One kind of effect: how many were expected and found, which were lost and which doubled."""

    effect: str
    expected: int
    found: int
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Tally:
    counts: list[Count]

    def get(self, effect: str) -> Count:
        return next(c for c in self.counts if c.effect == effect)

    @property
    def lost(self) -> int:
        return sum(len(c.lost) for c in self.counts)

    @property
    def doubled(self) -> int:
        return sum(len(c.doubled) for c in self.counts)

    def report(self) -> str:
        lines = [f"{'effect':<18} {'expected':>8} {'found':>6} {'lost':>5} {'doubled':>7}  note"]
        for c in self.counts:
            lines.append(f"{c.effect:<18} {c.expected:>8} {c.found:>6} {len(c.lost):>5} {len(c.doubled):>7}  {c.note}")
            lines += [f"    lost    {x}" for x in c.lost[:10]] + [f"    doubled {x}" for x in c.doubled[:10]]
        return "\n".join(lines)


def effect_count(effect: str, expected: Iterable[str], found: Sequence[str], note: str = "",
           partial: Iterable[str] = ()) -> Count:
    """``found`` holds one entry per effect seen (ids repeat when doubled); ``partial`` ones count as lost."""
    want, seen = set(expected), Counter(found)
    broken = set(partial)
    lost = sorted(want - set(seen) - broken) + sorted(f"{x} (partial)" for x in broken)
    doubled = sorted(f"{x} x{n}" for x, n in seen.items() if n > 1) + sorted(f"{x} (unexpected)" for x in set(seen) - want)
    return Count(effect, len(want), sum(seen.values()), lost, doubled, note)


def topic_messages(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end (no group, nothing committed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=1000)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s:.0f}s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def group_caught_up(bootstrap: str, group: str, topics: Sequence[str]) -> bool:
    """True when ``group`` has committed every message of ``topics`` (nothing in flight, nothing to redo)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        committed = admin.list_group_offsets(group)[group]
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        end = consumer.end_offsets(tps)
        return all((committed[tp].offset if tp in committed else 0) >= end[tp] for tp in tps)
    finally:
        consumer.close()
        admin.close()


class Ledger:
    def __init__(self, pipeline: Pipeline, video_ids: Iterable[str], tokenizer_id: str | None = None,
                 poison: Iterable[tuple[str, int, int]] = ()) -> None:
        """``poison``: (topic, partition, offset) of messages that must end up dead-lettered, once each."""
        self.pipeline, self.video_ids, self.tokenizer_id = pipeline, sorted(set(video_ids)), tokenizer_id
        self.poison = sorted(poison)

    def markers(self) -> dict[str, list[dict[str, Any]]]:
        """Video id -> its curation markers (one per config it was curated with)."""
        from worldloom.core.catalog import curated_marker_key

        store, found = self.pipeline.store, {}
        for vid in self.video_ids:
            folder = curated_marker_key(vid, "").rsplit("/", 1)[0] + "/"
            # the folder also holds the claims of curations in flight (curated_claim_key): markers only
            if ms := [json.loads(store.get_bytes(info.key)) for info in store.list(folder)
                      if info.key.endswith(".json")]:
                found[vid] = ms
        return found

    def accepted(self) -> set[str]:
        return {c for ms in self.markers().values() for m in ms for c in m["accepted"]}

    def count(self) -> Tally:
        from worldloom.core import events
        from worldloom.core.catalog import (
            RAW_PREFIX,
            SHARDS_PREFIX,
            TEXT_COLLECTION,
            VISUAL_COLLECTION,
            VideoRecord,
            iter_clip_records,
            raw_meta_key,
        )
        from worldloom.core.vectors import VectorIndex

        store, bootstrap = self.pipeline.store, self.pipeline.kafka.bootstrap_servers
        videos = self.video_ids
        counts: list[Count] = []

        # raw videos: the bytes and the sidecar, status "ingested"; nothing else under raw/
        objects: dict[str, list[str]] = defaultdict(list)
        for info in store.list(RAW_PREFIX):
            objects[info.key.split("/")[1]].append(info.key.split("/", 2)[2])
        partial = []
        for vid, names in objects.items():
            record = store.get_record(raw_meta_key(vid), VideoRecord) if "meta.json" in names else None
            if record is None or record.status != "ingested" or not any(n.startswith("video.") for n in names):
                partial.append(vid)
        counts.append(effect_count("raw videos", videos, [v for v in objects if v not in partial], partial=partial))

        ingested = _events(topic_messages(bootstrap, events.TOPIC_VIDEOS_INGESTED), lambda e: e.video_ingested.video_id,
                           self.poison)
        counts.append(event_count(events.TOPIC_VIDEOS_INGESTED, videos, ingested))

        markers = self.markers()
        counts.append(effect_count("curated markers", videos, [v for v, ms in markers.items() for _ in ms]))
        accepted = sorted({c for ms in markers.values() for m in ms for c in m["accepted"]})

        records, broken = [], []
        for rec in iter_clip_records(store):
            if rec.status != "accepted":
                continue
            if not rec.renditions or not all(store.exists(k) for k in rec.renditions.values()):
                broken.append(rec.clip_id)
            else:
                records.append(rec.clip_id)
        counts.append(effect_count("clip records", accepted, records, partial=broken))

        in_shards = []
        for info in store.list(SHARDS_PREFIX):
            with tarfile.open(fileobj=io.BytesIO(store.get_bytes(info.key))) as tar:
                in_shards += [m.name.removesuffix(".json") for m in tar.getmembers() if m.name.endswith(".json")]
        counts.append(effect_count("shard entries", accepted, in_shards))

        index = VectorIndex(self.pipeline.milvus.uri)
        try:
            for collection, where in ((VISUAL_COLLECTION, 'kind == "clip"'), (TEXT_COLLECTION, "")):
                rows = index.client.query(collection, filter=where or 'id != ""', output_fields=["id"], limit=16384)
                counts.append(effect_count(f"milvus {collection}", accepted, [str(r["id"]) for r in rows]))
        finally:
            index.close()

        curated = _events(topic_messages(bootstrap, events.TOPIC_CLIPS_CURATED), lambda e: e.clip_curated.clip_id)
        counts.append(event_count(events.TOPIC_CLIPS_CURATED, accepted, curated))

        if self.tokenizer_id is not None:
            counts += self._tokens(accepted)

        letters = []
        for topic in (events.TOPIC_VIDEOS_INGESTED, events.TOPIC_CLIPS_CURATED, events.TOPIC_CLIPS_TOKENIZED):
            for m in topic_messages(bootstrap, events.dlq_topic(topic)):
                letter = events.DeadLetter.FromString(m.value)
                letters.append(f"{letter.topic}[{letter.partition}]@{letter.offset}")
        counts.append(effect_count("dead letters", [f"{t}[{p}]@{o}" for t, p, o in self.poison], letters))
        return Tally(counts)

    def _tokens(self, accepted: list[str]) -> list[Count]:
        from worldloom.core import events
        from worldloom.core.catalog import token_marker_key, token_shard_key

        store, tid = self.pipeline.store, self.tokenizer_id
        assert tid is not None
        keys = {info.key for info in store.list(token_marker_key(tid, "").rsplit("/", 1)[0] + "/")}
        done = [c for c in accepted if token_marker_key(tid, c) in keys]
        done += [k for k in keys if k.endswith(".done") and k not in {token_marker_key(tid, c) for c in accepted}]
        partial = [c for c in done if token_shard_key(tid, c) not in keys]  # a marker without its shard
        tokenized = _events(topic_messages(self.pipeline.kafka.bootstrap_servers, events.TOPIC_CLIPS_TOKENIZED),
                            lambda e: e.clip_tokenized.clip_id if e.clip_tokenized.tokenizer_id == tid else "")
        tokenized.pop("", None)
        return [effect_count("token shards", accepted, [c for c in done if c not in partial], partial=partial),
                event_count(events.TOPIC_CLIPS_TOKENIZED, accepted, tokenized)]


def _events(records: list[Any], key_of: Any, poison: Iterable[tuple[str, int, int]] = ()) -> dict[str, list[str]]:
    """Effect key -> the event id of every message announcing it (ids repeat for re-emits); the poison
    messages a test put on the topic are no one's effect."""
    from worldloom.core import events

    skip = set(poison)
    by_key: dict[str, list[str]] = defaultdict(list)
    for m in records:
        if (m.topic, m.partition, m.offset) in skip:
            continue
        env = events.decode(m.value)
        by_key[key_of(env)].append(env.event_id)
    return by_key


def event_count(topic: str, expected: Iterable[str], by_key: dict[str, list[str]]) -> Count:
    """One event per effect: distinct ids per key; copies of one id (re-emits) are noted, not doubled."""
    found = [k for k, ids in by_key.items() for _ in set(ids)]
    copies = sum(len(ids) - len(set(ids)) for ids in by_key.values())
    return effect_count(topic, expected, found, note=f"{copies} re-sent with the same id" if copies else "")
