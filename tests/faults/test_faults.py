"""Nothing lost, nothing doubled: ten real videos flow through ingest, curate and tokenize -- each a
process on real Kafka, S3 and Milvus of its own -- while a worker is killed, the broker or the store goes
away, replicas rebalance or the dead-letter topic refuses writes. Afterwards every effect is counted
from the servers (``worldloom.testkit.ledger``): each accepted clip once in S3, one row per collection,
one ``clips.curated`` and one ``clips.tokenized`` event id per clip.

Fault points are drawn from a seeded RNG (``WORLDLOOM_FAULTS_SEED``) as "after the k-th clip record /
token marker, plus a delay", so a fault lands mid-stream however fast the machine is; two kills aim at
the narrowest window instead: after a worker published an event and before it wrote its marker (the
worker is frozen on each event and killed if the marker is missing). The table at the end of the run
lists every fault as it happened.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from worldloom.core import events
from worldloom.core.catalog import ACTIVE_TOKENIZER_KEY, CLIPS_PREFIX, curated_marker_key, token_marker_key
from worldloom.curate.config import CurationConfig
from worldloom.testkit.ledger import Ledger, group_caught_up
from worldloom.testkit.models import put_tokenizer
from worldloom.testkit.pipeline import Pipeline
from worldloom.testkit.process import wait_for
from worldloom.testkit.services import ServiceProcess

pytestmark = pytest.mark.integration

TOKENIZER = "tok-faults"
#: a clip's claim outlives a killed tokenize worker by at most this long (the default is minutes)
CLAIM_LEASE_S = "6"
#: a killed curate's claim on its video must run out within the scenario (renewed every fifth of it)
CURATE_CLAIM_LEASE_S = "15"
FINISH_S = 150.0


class Uploader(threading.Thread):
    """Uploads the videos one after another, each retried until it is accepted (2xx) or the deadline
    passes; every answer is kept, so a scenario can check what an outage looked like to a client."""

    def __init__(self, ingest: ServiceProcess, paths: list[Path], pause_s: float, deadline_s: float = 120.0) -> None:
        super().__init__(name="uploader", daemon=True)
        self.ingest, self.paths, self.pause_s = ingest, paths, pause_s
        self.deadline = time.monotonic() + deadline_s
        self.ids: dict[Path, str] = {}
        self.answers: list[tuple[str, int, dict]] = []  # (file, status, body) of every non-2xx answer
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for path in self.paths:
                self.ids[path] = self._upload(path)
                time.sleep(self.pause_s)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def _upload(self, path: Path) -> str:
        while time.monotonic() < self.deadline:
            try:
                with open(path, "rb") as f:
                    r = httpx.post(f"{self.ingest.url}/v1/videos", headers=self.ingest.headers, timeout=120,
                                   files={"file": (path.name, f, "video/mp4")})
            except httpx.TransportError as exc:
                self.answers.append((path.name, 0, {"transport": repr(exc)}))
            else:
                if r.is_success:
                    return r.json()["video"]["video_id"]
                try:
                    body = r.json()
                except ValueError:
                    body = {"text": r.text[:200]}
                self.answers.append((path.name, r.status_code, body))
            time.sleep(1.0)
        raise AssertionError(f"{path.name} was not accepted before the deadline; answers: {self.answers[-3:]}")

    def video_ids(self, timeout_s: float) -> list[str]:
        self.join(timeout_s)
        assert not self.is_alive(), "uploads did not finish"
        if self.error is not None:
            raise self.error
        return sorted(set(self.ids.values()))


class Flow:
    """One scenario's pipeline: services, uploads, fault points, the wait for the end and the count."""

    def __init__(self, p: Pipeline, row, rng: random.Random, tmp: Path, *, tokenize: bool = True) -> None:
        self.p, self.row, self.rng = p, row, rng
        self.started = time.monotonic()
        self.tokenizer = TOKENIZER if tokenize else None
        self.poison: list[tuple[str, int, int]] = []  # (topic, partition, offset) that must be dead-lettered
        if tokenize:
            _activate_tiny_tokenizer(p, tmp)

    def curate(self, name: str = "curate") -> ServiceProcess:
        return self.p.service("curate", name, CLAIM_LEASE_S=CURATE_CLAIM_LEASE_S)

    def tokenize(self, name: str = "tokenize") -> ServiceProcess:
        # the longest clip (10 s at 24 fps) within the encode limit; the tiny tokenizer encodes 16x16 frames
        return self.p.service("tokenize", name, CLAIM_LEASE_S=CLAIM_LEASE_S, ENCODE_MAX_FRAMES="257")

    # progress and fault points --------------------------------------------------------------------
    def clip_records(self) -> int:
        return sum(1 for o in self.p.store.list(CLIPS_PREFIX) if o.key.endswith("/meta.json"))

    def token_markers(self) -> int:
        prefix = token_marker_key(TOKENIZER, "").rsplit("/", 1)[0] + "/"
        return sum(1 for o in self.p.store.list(prefix) if o.key.endswith(".done"))

    def at(self, what: str, count, k: int, delay_s: float, timeout_s: float = 90.0) -> bool:
        """Waits for the k-th `what` (``count()`` >= k), then ``delay_s``; False (logged) if the stream ended
        first. The caller injects its fault after this returns."""
        deadline = time.monotonic() + timeout_s
        while (n := count()) < k:
            if time.monotonic() > deadline:
                self.log(f"never reached {what} #{k} (at {n}): fault skipped")
                return False
            time.sleep(0.1)
        time.sleep(delay_s)
        return True

    def kill_between_event_and_marker(self, victim: ServiceProcess, topic: str, what: str, marker_of,
                                      timeout_s: float = 90.0) -> bool:
        """kill -9 ``victim`` after it published an event on ``topic`` but before it wrote the marker that
        says "done" (``marker_of(envelope)``): the event it will send again on restart must carry the same id.
        Each event seen freezes the victim (SIGSTOP); it is killed if the marker is missing, else thawed
        until the next event. False (logged) if the window was never caught."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.p.kafka.bootstrap_servers, group_id=None,
                                 enable_auto_commit=False, fetch_max_wait_ms=10)
        try:
            parts = wait_for(lambda: consumer.partitions_for_topic(topic), 30, f"{topic}'s partitions")
            tps = [TopicPartition(topic, n) for n in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_end(*tps)
            deadline, seen = time.monotonic() + timeout_s, 0
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=50).values():
                    for m in records:
                        env, seen = events.decode(m.value), seen + 1
                        victim.freeze()
                        if not self.p.store.exists(marker_of(env)):
                            victim.kill()
                            self.log(f"kill -9 {victim.name} between {what} #{seen} and its marker")
                            victim.start()
                            return True
                        victim.thaw()
        finally:
            consumer.close()
        self.log(f"{victim.name}: the window between {what} and its marker was not caught in {seen} events")
        return False

    def log(self, fault: str) -> None:
        line = f"t={time.monotonic() - self.started:.0f}s {fault}"
        self.row.faults.append(line)
        print(line, flush=True)

    # the end --------------------------------------------------------------------------------------
    def finish(self, video_ids: list[str], timeout_s: float = FINISH_S) -> Ledger:
        """Waits until every video is curated, every accepted clip tokenized and every consumer group has
        committed everything (so nothing is in flight that could still add an effect), then counts."""
        ledger = Ledger(self.p, video_ids, self.tokenizer, self.poison)
        wait_for(lambda: len(ledger.markers()) == len(video_ids), timeout_s, "every video's curation marker")
        if self.tokenizer:
            accepted = ledger.accepted()
            wait_for(lambda: all(self.p.store.exists(token_marker_key(TOKENIZER, c)) for c in accepted),
                     timeout_s, "a token marker for every accepted clip")
        bootstrap = self.p.kafka.bootstrap_servers
        groups = [("curate", events.TOPIC_VIDEOS_INGESTED)]
        if self.tokenizer:
            groups.append(("tokenize", events.TOPIC_CLIPS_CURATED))
        for group, topic in groups:
            wait_for(lambda g=group, t=topic: group_caught_up(bootstrap, g, [t]), 60, f"group {group} to commit {topic}")
        return ledger

    def check(self, ledger: Ledger, events_in: str, problems: Sequence[str] = ()) -> None:
        """Counts (into the table), then fails on any loss, double or other ``problems`` -- all at once."""
        tally = ledger.count()
        self.row.events_in, self.row.tally = events_in, tally
        assert tally.get("clip records").expected > 0, "no clip was accepted: the scenario proves nothing"
        if tally.lost or tally.doubled:
            problems = [*problems, f"{tally.lost} lost, {tally.doubled} doubled:\n{tally.report()}"]
        assert not problems, "\n".join(problems)


def _activate_tiny_tokenizer(p: Pipeline, tmp: Path) -> None:
    """A random tiny FSQ tokenizer in the pipeline's bucket, registered as imported and active, so tokenize
    encodes every clips.curated event from the start."""
    from worldloom.tokenize.registry import TokenizerRecord, TokenizerRegistry

    tok = put_tokenizer(p.store, TOKENIZER, "discrete", tmp)
    TokenizerRegistry(p.store).save(TokenizerRecord(
        tokenizer_id=TOKENIZER, name="faults", source="imported", state="succeeded", config=tok.config.to_dict(),
        request={"resolution": 16}, announced=True))
    p.store.put_bytes(ACTIVE_TOKENIZER_KEY, json.dumps({"tokenizer_id": TOKENIZER}).encode(), "application/json")


def _not_503_with_a_reason(answers: list[tuple[str, int, dict]]) -> list[str]:
    """What a client saw during an outage must be 503 with a stable code and a message (or a wait), never a
    500: returns the problems."""
    bad = [a for a in answers if a[1] != 503 or not a[2].get("error", {}).get("code")
           or not a[2].get("error", {}).get("message")]
    return [f"uploads during the outage answered other than 503 with a reason: {bad[:3]}"] if bad else []


# scenarios --------------------------------------------------------------------------------------------

@pytest.mark.timeout(420)
def test_kill_curate_and_tokenize_workers(pipeline, videos, rng, row, tmp_path) -> None:
    """kill -9 of curate at a seeded point, then of curate and of tokenize each between an event it
    published and the marker that records it, while the videos flow; each restarts at once."""
    flow = Flow(pipeline, row, rng, tmp_path)
    ingest, curate, tokenize = pipeline.service("ingest"), flow.curate(), flow.tokenize()
    pipeline.start(ingest, curate, tokenize)
    uploads = Uploader(ingest, videos, pause_s=0.3)
    uploads.start()
    k, delay = rng.randint(1, 4), rng.uniform(0, 1.5)
    if flow.at("clip record", flow.clip_records, k, delay):  # anywhere in the pipeline
        curate.kill()
        flow.log(f"kill -9 curate after clip record #{k} +{delay:.2f}s")
        curate.start()
    config_hash = CurationConfig().config_hash()
    flow.kill_between_event_and_marker(curate, events.TOPIC_CLIPS_CURATED, "clips.curated event",
                                       lambda e: curated_marker_key(e.clip_curated.video_id, config_hash))
    flow.kill_between_event_and_marker(tokenize, events.TOPIC_CLIPS_TOKENIZED, "clips.tokenized event",
                                       lambda e: token_marker_key(TOKENIZER, e.clip_tokenized.clip_id))
    ids = uploads.video_ids(120)
    flow.check(flow.finish(ids), f"{len(ids)} videos")


def _outage(flow: Flow, ingest: ServiceProcess, videos: list[Path], server, what: str,
            down_s: float) -> tuple[list[str], list[str]]:
    """Half the videos are uploaded first; after a seeded clip record ``server`` stops for ``down_s`` while
    the other half is uploaded, then starts again on its data. Returns every video id (once accepted) and
    what was wrong with the answers the uploads got meanwhile."""
    first = Uploader(ingest, videos[: len(videos) // 2], pause_s=0.3)
    first.start()
    k, delay = flow.rng.randint(1, 3), flow.rng.uniform(0, 1.5)
    second = Uploader(ingest, videos[len(videos) // 2 :], pause_s=0.5)
    if flow.at("clip record", flow.clip_records, k, delay):
        server.halt()
        flow.log(f"{what} stopped after clip record #{k} +{delay:.2f}s for {down_s:.1f}s; uploads go on")
        second.start()
        time.sleep(down_s)
        server.start()
        flow.log(f"{what} back")
    else:
        second.start()
    ids = first.video_ids(150) + second.video_ids(150)
    answers = first.answers + second.answers
    flow.row.faults.append("uploads refused meanwhile: " + (", ".join(
        f"{a[1]} {a[2].get('error', {}).get('code', a[2])}" for a in answers) or "none (they waited)"))
    return ids, _not_503_with_a_reason(answers)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("server", ["kafka", "s3"], ids=["broker_stop_and_restart", "s3_unavailable_for_a_while"])
def test_outage(server, pipeline, videos, rng, row, tmp_path) -> None:
    """The Kafka broker, or the S3 server, stops mid-stream for a few seconds and comes back on its data dir:
    uploads meanwhile wait or answer 503 with a reason (never 500), no partial object is left (the ledger
    checks raw videos, clip renditions and token shards), the consumers retry and finish."""
    flow = Flow(pipeline, row, rng, tmp_path)
    ingest, curate, tokenize = pipeline.service("ingest"), flow.curate(), flow.tokenize()
    pipeline.start(ingest, curate, tokenize)
    down_s = rng.uniform(4, 8) if server == "kafka" else rng.uniform(5, 10)
    ids, problems = _outage(flow, ingest, videos, getattr(pipeline, server), server, down_s)
    flow.check(flow.finish(ids), f"{len(ids)} videos", problems)


@pytest.mark.timeout(420)
def test_two_replicas_each_and_a_rebalance(pipeline, videos, rng, row, tmp_path) -> None:
    """Two curate and two tokenize replicas in one consumer group each; mid-stream one of each leaves the
    group (graceful stop) and joins again: two rebalances per group while batches are in flight."""
    flow = Flow(pipeline, row, rng, tmp_path)
    ingest = pipeline.service("ingest")
    curates = [flow.curate("curate-a"), flow.curate("curate-b")]
    tokenizes = [flow.tokenize("tokenize-a"), flow.tokenize("tokenize-b")]
    pipeline.start(ingest, *curates, *tokenizes)
    uploads = Uploader(ingest, videos, pause_s=0.3)
    uploads.start()
    for group, what, count, k, delay in ((curates, "clip record", flow.clip_records, rng.randint(1, 5), rng.uniform(0, 1.5)),
                                         (tokenizes, "token marker", flow.token_markers, rng.randint(1, 5), rng.uniform(0, 1.0))):
        victim = rng.choice(group)
        if flow.at(what, count, k, delay):
            victim.halt()
            flow.log(f"{victim.name} left its group after {what} #{k} +{delay:.2f}s")
            victim.start()
            flow.log(f"{victim.name} joined again")
    ids = uploads.video_ids(120)
    flow.check(flow.finish(ids), f"{len(ids)} videos")


#: a broker that enforces ACLs (everything is allowed while a resource has none), so a test can deny writes
AUTHORIZER = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
              "allow.everyone.if.no.acl.found": "true"}


@pytest.mark.timeout(420)
def test_dlq_unavailable_while_poison_arrives(make_pipeline, videos, rng, row, tmp_path) -> None:
    """videos.ingested.dlq refuses writes (an ACL denies them: TopicAuthorizationFailed) while two poison
    messages arrive among the videos: the consumer must neither commit past a poison message it could not
    dead-letter nor stop; once the DLQ takes writes again, each poison message is dead-lettered once and
    every video is curated (issue 15 defect 1)."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )

    pipeline = make_pipeline(kafka_properties=AUTHORIZER)
    flow = Flow(pipeline, row, rng, tmp_path, tokenize=False)
    ingest, curate = pipeline.service("ingest"), flow.curate()
    pipeline.start(ingest, curate)  # curate's consumer creates the topics and their DLQs
    bootstrap, dlq = pipeline.kafka.bootstrap_servers, events.dlq_topic(events.TOPIC_VIDEOS_INGESTED)
    deny = ("User:ANONYMOUS", "*", ACLOperation.WRITE, ACLPermissionType.DENY)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert not admin.create_acls([ACL(*deny, ResourcePattern(ResourceType.TOPIC, dlq))])["failed"]
        flow.log(f"{dlq} refuses writes (ACL)")
        unknown = events.new_event("faults", events.VideoIngested(video_id="0" * 64), lineage=["0" * 64])
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        sent = [producer.send(events.TOPIC_VIDEOS_INGESTED, key=b"poison-garbage", value=b"\xff not an envelope"),
                producer.send(events.TOPIC_VIDEOS_INGESTED, key=b"0" * 64, value=events.encode(unknown))]
        flow.poison = [(m.topic, m.partition, m.offset) for m in (f.get(timeout=30) for f in sent)]
        producer.close()
        uploads = Uploader(ingest, videos, pause_s=0.3)
        uploads.start()
        wait_for(lambda: _batch_failures(curate) > 0, 60, "curate to fail writing a dead letter")
        extra = rng.uniform(2, 5)
        flow.log(f"curate failed a dead-letter write; the DLQ stays closed {extra:.1f}s more")
        time.sleep(extra)
    finally:
        admin.delete_acls([ACLFilter(*deny, ResourcePatternFilter(ResourceType.TOPIC, dlq, ACLResourcePatternType.LITERAL))])
        admin.close()
    flow.log(f"{dlq} takes writes again")
    ids = uploads.video_ids(120)
    flow.check(flow.finish(ids), f"{len(ids)} videos + 2 poison")


def _batch_failures(service: ServiceProcess) -> float:
    """worldloom_bus_batch_failures_total of a service, from its /metrics."""
    text = httpx.get(f"{service.url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("worldloom_bus_batch_failures_total{"))
