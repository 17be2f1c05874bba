"""The KRaft cluster id the testkit formats storage with (pure logic: no server started)."""

from __future__ import annotations

import base64
import re

from worldloom.testkit.kafka import _cluster_id


def test_cluster_ids_never_start_with_a_dash_and_are_valid_kafka_ids() -> None:
    """A leading '-' made Kafka's storage tool read the id as an option (1 draw in 64 failed start-up)."""
    ids = [_cluster_id() for _ in range(20_000)]
    dashed = [i for i in ids if i.startswith("-")]
    assert not dashed, f"{len(dashed)} of {len(ids)} ids start with '-', e.g. {dashed[:3]}"
    for cid in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid), cid
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    assert len(set(ids)) == len(ids)  # random, not a constant that happens to pass
