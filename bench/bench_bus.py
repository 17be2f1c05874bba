"""KafkaBus produce+consume events/s against raw kafka-python doing the same work, in the same run.

Both sides: acks=all producer with the same linger, a consumer group with manual commits after each
polled batch, the same serialized envelopes. Prints events/s and the ratio (aim: >= 0.8).
Usage: python bench/bench_bus.py [--events N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata

from worldloom.core import events
from worldloom.core.bus.kafka import KafkaBus
from worldloom.core.settings import BusSettings
from worldloom.testkit.kafka import KafkaServer


def _events(n: int) -> list[events.Envelope]:
    return [events.new_event("bench", events.VideoIngested(video_id=f"{i:064x}", uri=f"s3://b/raw/{i}",
                                                           size_bytes=i)) for i in range(n)]


def run_bus(bootstrap: str, evs: list[events.Envelope]) -> float:
    bus = KafkaBus(BusSettings(kind="kafka", bootstrap_servers=bootstrap, partitions=1))
    topic = f"bench.bus.{uuid.uuid4().hex[:8]}"
    bus.ensure_topics([topic])
    got = []
    consumer = bus.consumer([topic], "bench", lambda env: got.append(env.event_id))
    start = time.perf_counter()
    for env in evs:
        bus.publish(topic, env, key=env.video_ingested.video_id, wait=False)
    bus.flush()
    while len(got) < len(evs):
        consumer.poll_once(1.0)
    elapsed = time.perf_counter() - start
    consumer.close()
    bus.close()
    return len(evs) / elapsed


def run_raw(bootstrap: str, evs: list[events.Envelope]) -> float:
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="bench", enable_auto_commit=False,
                             auto_offset_reset="earliest", max_poll_records=500)
    start = time.perf_counter()
    for env in evs:
        producer.send(topic, value=env.SerializeToString(deterministic=True), key=env.video_ingested.video_id.encode())
    producer.flush()
    seen = 0
    while seen < len(evs):
        batch = consumer.poll(timeout_ms=1000)
        offsets = {}
        for tp, recs in batch.items():
            for rec in recs:
                env = events.Envelope.FromString(rec.value)  # a real consumer parses what it reads
                seen += bool(env.event_id)
            offsets[tp] = OffsetAndMetadata(recs[-1].offset + 1, "", -1)
        if offsets:
            consumer.commit(offsets)
    elapsed = time.perf_counter() - start
    consumer.close()
    producer.close()
    return len(evs) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    evs = _events(args.events)
    with KafkaServer() as kafka:
        run_raw(kafka.bootstrap_servers, evs[:1000])  # warm-up: JIT, connections
        bus_rates, raw_rates = [], []
        for _ in range(args.rounds):  # interleaved so machine noise hits both alike
            raw_rates.append(run_raw(kafka.bootstrap_servers, evs))
            bus_rates.append(run_bus(kafka.bootstrap_servers, evs))
        bus, raw = statistics.median(bus_rates), statistics.median(raw_rates)
        print(f"events per round: {args.events}, rounds: {args.rounds} (medians)")
        print(f"raw kafka-python produce+consume: {raw:,.0f} events/s")
        print(f"KafkaBus produce+consume:         {bus:,.0f} events/s")
        print(f"ratio KafkaBus / raw:             {bus / raw:.2f}")


if __name__ == "__main__":
    main()
