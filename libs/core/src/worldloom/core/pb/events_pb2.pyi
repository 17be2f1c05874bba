import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("event_id", "schema_version", "type", "producer", "time", "lineage", "video_ingested", "clip_curated", "dataset_created", "clip_tokenized", "model_trained", "policy_trained")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_INGESTED_FIELD_NUMBER: _ClassVar[int]
    CLIP_CURATED_FIELD_NUMBER: _ClassVar[int]
    DATASET_CREATED_FIELD_NUMBER: _ClassVar[int]
    CLIP_TOKENIZED_FIELD_NUMBER: _ClassVar[int]
    MODEL_TRAINED_FIELD_NUMBER: _ClassVar[int]
    POLICY_TRAINED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    schema_version: int
    type: str
    producer: str
    time: _timestamp_pb2.Timestamp
    lineage: _containers.RepeatedScalarFieldContainer[str]
    video_ingested: VideoIngested
    clip_curated: ClipCurated
    dataset_created: DatasetCreated
    clip_tokenized: ClipTokenized
    model_trained: ModelTrained
    policy_trained: PolicyTrained
    def __init__(self, event_id: _Optional[str] = ..., schema_version: _Optional[int] = ..., type: _Optional[str] = ..., producer: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Iterable[str]] = ..., video_ingested: _Optional[_Union[VideoIngested, _Mapping]] = ..., clip_curated: _Optional[_Union[ClipCurated, _Mapping]] = ..., dataset_created: _Optional[_Union[DatasetCreated, _Mapping]] = ..., clip_tokenized: _Optional[_Union[ClipTokenized, _Mapping]] = ..., model_trained: _Optional[_Union[ModelTrained, _Mapping]] = ..., policy_trained: _Optional[_Union[PolicyTrained, _Mapping]] = ...) -> None: ...

class VideoInfo(_message.Message):
    __slots__ = ("container", "codec", "width", "height", "fps", "duration_s", "frame_count", "rotation", "has_audio", "pix_fmt", "start_time_s")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    HAS_AUDIO_FIELD_NUMBER: _ClassVar[int]
    PIX_FMT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_S_FIELD_NUMBER: _ClassVar[int]
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    rotation: int
    has_audio: bool
    pix_fmt: str
    start_time_s: float
    def __init__(self, container: _Optional[str] = ..., codec: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ..., duration_s: _Optional[float] = ..., frame_count: _Optional[int] = ..., rotation: _Optional[int] = ..., has_audio: _Optional[bool] = ..., pix_fmt: _Optional[str] = ..., start_time_s: _Optional[float] = ...) -> None: ...

class VideoIngested(_message.Message):
    __slots__ = ("video_id", "uri", "metadata_uri", "size_bytes", "filename", "source", "info", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    METADATA_URI_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    uri: str
    metadata_uri: str
    size_bytes: int
    filename: str
    source: str
    info: VideoInfo
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, video_id: _Optional[str] = ..., uri: _Optional[str] = ..., metadata_uri: _Optional[str] = ..., size_bytes: _Optional[int] = ..., filename: _Optional[str] = ..., source: _Optional[str] = ..., info: _Optional[_Union[VideoInfo, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ClipCurated(_message.Message):
    __slots__ = ("clip_id", "video_id", "start_frame", "end_frame", "start_s", "end_s", "config_hash", "metadata_uri", "renditions", "shard_uri", "caption", "tags", "width", "height", "fps")
    class RenditionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CLIP_ID_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    START_FRAME_FIELD_NUMBER: _ClassVar[int]
    END_FRAME_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    METADATA_URI_FIELD_NUMBER: _ClassVar[int]
    RENDITIONS_FIELD_NUMBER: _ClassVar[int]
    SHARD_URI_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    clip_id: str
    video_id: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    config_hash: str
    metadata_uri: str
    renditions: _containers.ScalarMap[str, str]
    shard_uri: str
    caption: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    width: int
    height: int
    fps: float
    def __init__(self, clip_id: _Optional[str] = ..., video_id: _Optional[str] = ..., start_frame: _Optional[int] = ..., end_frame: _Optional[int] = ..., start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., config_hash: _Optional[str] = ..., metadata_uri: _Optional[str] = ..., renditions: _Optional[_Mapping[str, str]] = ..., shard_uri: _Optional[str] = ..., caption: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ...) -> None: ...

class DatasetCreated(_message.Message):
    __slots__ = ("name", "version", "manifest_uri", "clip_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_URI_FIELD_NUMBER: _ClassVar[int]
    CLIP_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    manifest_uri: str
    clip_count: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., manifest_uri: _Optional[str] = ..., clip_count: _Optional[int] = ...) -> None: ...

class ClipTokenized(_message.Message):
    __slots__ = ("clip_id", "tokenizer_id", "kind", "shard_uri", "shape", "dtype", "frames", "resolution", "compression")
    CLIP_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARD_URI_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    clip_id: str
    tokenizer_id: str
    kind: str
    shard_uri: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    frames: int
    resolution: int
    compression: str
    def __init__(self, clip_id: _Optional[str] = ..., tokenizer_id: _Optional[str] = ..., kind: _Optional[str] = ..., shard_uri: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., frames: _Optional[int] = ..., resolution: _Optional[int] = ..., compression: _Optional[str] = ...) -> None: ...

class ModelTrained(_message.Message):
    __slots__ = ("model_id", "name", "family", "size", "tokenizer_id", "model_uri", "datasets", "parent_model", "metrics", "steps")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    PARENT_MODEL_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    name: str
    family: str
    size: str
    tokenizer_id: str
    model_uri: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    parent_model: str
    metrics: _containers.ScalarMap[str, float]
    steps: int
    def __init__(self, model_id: _Optional[str] = ..., name: _Optional[str] = ..., family: _Optional[str] = ..., size: _Optional[str] = ..., tokenizer_id: _Optional[str] = ..., model_uri: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., parent_model: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., steps: _Optional[int] = ...) -> None: ...

class PolicyTrained(_message.Message):
    __slots__ = ("policy_id", "experiment_id", "env_id", "policy_uri", "world_model_uri", "tokenizer_uri", "base_world_model", "video_ids", "real_steps", "resolution", "action_kind", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENV_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_URI_FIELD_NUMBER: _ClassVar[int]
    WORLD_MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_URI_FIELD_NUMBER: _ClassVar[int]
    BASE_WORLD_MODEL_FIELD_NUMBER: _ClassVar[int]
    VIDEO_IDS_FIELD_NUMBER: _ClassVar[int]
    REAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    ACTION_KIND_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    policy_id: str
    experiment_id: str
    env_id: str
    policy_uri: str
    world_model_uri: str
    tokenizer_uri: str
    base_world_model: str
    video_ids: _containers.RepeatedScalarFieldContainer[str]
    real_steps: int
    resolution: int
    action_kind: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, policy_id: _Optional[str] = ..., experiment_id: _Optional[str] = ..., env_id: _Optional[str] = ..., policy_uri: _Optional[str] = ..., world_model_uri: _Optional[str] = ..., tokenizer_uri: _Optional[str] = ..., base_world_model: _Optional[str] = ..., video_ids: _Optional[_Iterable[str]] = ..., real_steps: _Optional[int] = ..., resolution: _Optional[int] = ..., action_kind: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("topic", "partition", "offset", "key", "value", "error", "error_type", "attempts", "consumer_group", "failed_at")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_GROUP_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    error: str
    error_type: str
    attempts: int
    consumer_group: str
    failed_at: _timestamp_pb2.Timestamp
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., key: _Optional[str] = ..., value: _Optional[bytes] = ..., error: _Optional[str] = ..., error_type: _Optional[str] = ..., attempts: _Optional[int] = ..., consumer_group: _Optional[str] = ..., failed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
