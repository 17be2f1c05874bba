"""Building, encoding and decoding bus events (protobuf envelopes from proto/worldloom/v1)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

from google.protobuf import message as _message
from google.protobuf.timestamp_pb2 import Timestamp

from worldloom.core.pb import events_pb2 as pb

SCHEMA_VERSION = 1

Envelope = pb.Envelope
VideoIngested = pb.VideoIngested
VideoInfo = pb.VideoInfo
DeadLetter = pb.DeadLetter
ClipCurated = pb.ClipCurated
DatasetCreated = pb.DatasetCreated
ClipTokenized = pb.ClipTokenized
ModelTrained = pb.ModelTrained
PolicyTrained = pb.PolicyTrained

# Topic names live here so producers and consumers cannot drift apart.
TOPIC_VIDEOS_INGESTED = "videos.ingested"
TOPIC_CLIPS_CURATED = "clips.curated"
TOPIC_DATASETS_CREATED = "datasets.created"
TOPIC_CLIPS_TOKENIZED = "clips.tokenized"
TOPIC_MODELS_TRAINED = "models.trained"
TOPIC_POLICIES_TRAINED = "policies.trained"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


class EventDecodeError(ValueError):
    """The bytes are not a Worldloom envelope we can read (a poison message: never retried)."""


def effect_id(topic: str, *parts: str) -> str:
    """An event id derived from the effect the event announces (its topic and output ids / config), so a
    re-emit after a crash or a redelivery is *the same* event and consumers can drop the copy by id."""
    return hashlib.sha256("\x1f".join((topic, *parts)).encode()).hexdigest()[:32]


def new_event(producer: str, payload: _message.Message, lineage: Iterable[str] = (),
              event_id: str | None = None) -> pb.Envelope:
    """Wraps a payload in an envelope with the current schema version and UTC time. ``event_id`` should be
    an :func:`effect_id` whenever the event announces an output; a random id is for one-off notices."""
    env = pb.Envelope(
        event_id=event_id or uuid.uuid4().hex,
        schema_version=SCHEMA_VERSION,
        type=payload.DESCRIPTOR.full_name,
        producer=producer,
        lineage=list(lineage),
    )
    env.time.GetCurrentTime()
    field = _payload_field(payload)
    getattr(env, field).CopyFrom(payload)
    return env


def _payload_field(payload: _message.Message) -> str:
    for field in pb.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields:
        if field.message_type.full_name == payload.DESCRIPTOR.full_name:
            return field.name
    raise TypeError(f"{payload.DESCRIPTOR.full_name} is not an envelope payload")


def encode(env: pb.Envelope) -> bytes:
    return env.SerializeToString(deterministic=True)


def decode(data: bytes) -> pb.Envelope:
    """Parses and checks an envelope; raises EventDecodeError with a reason on anything unreadable."""
    env = pb.Envelope()
    try:
        env.ParseFromString(data)
    except _message.DecodeError as exc:
        raise EventDecodeError(f"not a protobuf Envelope: {exc}") from exc
    if not env.event_id:
        raise EventDecodeError("envelope has no event_id")
    if env.schema_version != SCHEMA_VERSION:
        raise EventDecodeError(
            f"unsupported schema_version {env.schema_version} (this consumer reads {SCHEMA_VERSION})"
        )
    if env.WhichOneof("payload") is None:
        raise EventDecodeError(f"envelope {env.event_id} of type {env.type!r} carries no known payload")
    return env


def payload_of(env: pb.Envelope) -> _message.Message:
    return getattr(env, env.WhichOneof("payload"))


def timestamp_now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts
