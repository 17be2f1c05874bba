"""A consumer process for the cross-process Kafka tests (run as a script, not collected by pytest).

Its side effect is idempotent, like a real handler's: one file per event id, created only if absent.
It logs every handler call, so a test can see redeliveries, and can die abruptly after N calls
(after the side effect, before the commit) to simulate a crash.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from worldloom.core import events
from worldloom.core.bus.kafka import KafkaBus
from worldloom.core.settings import BusSettings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--expect", type=int, required=True, help="exit 0 once this many effects exist")
    ap.add_argument("--crash-after", type=int, default=0, help="os._exit after this many handler calls")
    ap.add_argument("--timeout", type=float, default=90)
    args = ap.parse_args()
    effects = args.out / "effects"
    effects.mkdir(parents=True, exist_ok=True)
    calls = {"n": 0}

    def handler(env: events.Envelope) -> None:
        calls["n"] += 1
        with open(args.out / "invocations.log", "a") as log:
            log.write(env.event_id + "\n")
        try:
            fd = os.open(effects / env.event_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # already done: a redelivery changes nothing
        with os.fdopen(fd, "w") as f:
            f.write(env.video_ingested.video_id)
            f.flush()
            os.fsync(f.fileno())
        with open(args.out / "effect_writes.log", "a") as log:
            log.write(env.event_id + "\n")
        if args.crash_after and calls["n"] >= args.crash_after:
            os._exit(17)  # dies after the effect, before the batch is committed

    bus = KafkaBus(BusSettings(kind="kafka", bootstrap_servers=args.bootstrap, client_id="worker"))
    consumer = bus.consumer([args.topic], args.group, handler)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        consumer.poll_once(0.5)
        if len(os.listdir(effects)) >= args.expect:
            consumer.close()
            sys.exit(0)
    sys.exit(3)


if __name__ == "__main__":
    main()
