import filecmp
import tempfile
from pathlib import Path

import pytest

from worldloom.core import events, protogen


def _ingested() -> events.VideoIngested:
    return events.VideoIngested(video_id="ab" * 32, uri="s3://b/raw/x", size_bytes=10)


def test_envelope_round_trip_keeps_everything():
    env = events.new_event("ingest", _ingested(), lineage=["v1"])
    back = events.decode(events.encode(env))
    assert back == env
    assert back.type == "worldloom.v1.VideoIngested"
    assert back.schema_version == events.SCHEMA_VERSION
    assert events.payload_of(back).video_id == "ab" * 32
    assert back.time.seconds > 0 and len(back.event_id) == 32


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\xff\xff\xff garbage", "not a protobuf"),
        (b"", "no event_id"),
    ],
)
def test_decode_rejects_poison(data, reason):
    with pytest.raises(events.EventDecodeError, match=reason):
        events.decode(data)


def test_decode_rejects_other_schema_version_and_missing_payload():
    env = events.new_event("ingest", _ingested())
    env.schema_version = 99
    with pytest.raises(events.EventDecodeError, match="schema_version 99"):
        events.decode(events.encode(env))
    bare = events.Envelope(event_id="x", schema_version=events.SCHEMA_VERSION)
    with pytest.raises(events.EventDecodeError, match="no known payload"):
        events.decode(events.encode(bare))


def test_only_envelope_payloads_can_be_wrapped():
    with pytest.raises(TypeError):
        events.new_event("x", events.VideoInfo())


def test_generated_code_matches_proto_files():
    """Fails when proto/ changed without `make proto` (the committed modules would be stale)."""
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in protogen.generate(Path(tmp)):
            committed = protogen.OUT_DIR / fresh.name
            assert committed.exists(), f"{committed} missing: run make proto"
            assert filecmp.cmp(fresh, committed, shallow=False), f"{committed.name} is stale: run make proto"
