"""The object layout and records shared by the services (ingest, curate, search).

Every key two places use is a function here, so the layout below is the whole truth:
  raw/<video_id>/video.<ext>, raw/<video_id>/meta.json   ingested videos and their VideoRecord sidecars
  raw/<video_id>/ingest.claim            held while one replica ingests the video
  raw/<video_id>/actions.safetensors, actions.json      an episode's per-step arrays (simulator or upload; written
                                         and read by worldloom.core.episodes) and their description
  clips/<clip_id>/meta.json            ClipRecord (accepted and rejected clips alike, with reasons)
  clips/<clip_id>/<rendition>.mp4      e.g. preview.mp4 (256p), train.mp4 (square training clip)
  clips/<clip_id>/thumb.jpg, preview.gif
  curated/<video_id>/<config_hash>.json  marker written last: this video is done with this config
  curated/<video_id>/<config_hash>.claim held while one replica curates the video with this config
  shards/<config_hash>/<bucket>/<video_id>-<n>.tar   webdataset shards of accepted clips
  runs/<run_id>/run.json, runs/<run_id>/summary.parquet
  datasets/<name>/v<version>.json       DatasetManifest (read back with read_dataset)
  datasets/<name>/v<version>.announced  written once its datasets.created was acknowledged
Milvus: two collections with the same ids and scalar fields (CLIP_SCALARS, filled by clip_row) — one
over visual clip embeddings, one over caption text embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worldloom.core.ids import is_safe_id
from worldloom.core.store.base import ObjectNotFound, ObjectStore
from worldloom.core.vectors import CollectionSpec

#: the rendition models train on (square, fixed fps); ClipRecord.renditions / ClipCurated.renditions key
TRAIN_RENDITION = "train.mp4"

VISUAL_COLLECTION = "clips_visual"
TEXT_COLLECTION = "clips_text"

# Scalar fields stored next to both vectors, so search can filter without touching the store.
# The visual collection holds one "clip" row per clip (mean embedding, id = clip_id) and a few
# "frame" rows (keyframe embeddings, id = "<clip_id>:<k>"): an image query is matched against
# keyframes, so a frame finds its own clip even among clips cut from one continuous shot.
CLIP_SCALARS: dict[str, Literal["str", "int", "float", "bool", "json"]] = {
    "clip_id": "str",
    "kind": "str",
    "video_id": "str",
    "source": "str",
    "caption": "str",
    "tags": "json",
    "duration_s": "float",
    "start_s": "float",
    "end_s": "float",
    "width": "int",
    "height": "int",
    "fps": "float",
    "motion": "float",
    "sharpness": "float",
    "brightness": "float",
    "config_hash": "str",
    "phash": "str",
}


#: bytes (UTF-8, as Milvus counts) of every "str" scalar of the clip collections: the one declaration that
#: the attribute limits below and clip_row's cut derive from
CLIP_STR_MAX_BYTES = 2048

#: scalar field (Milvus, run summaries) -> the ClipRecord.scores key it is filled from
SCORE_SCALARS = {"motion": "motion_mean", "sharpness": "sharpness", "brightness": "brightness"}
RowKind = Literal["clip", "frame", "caption"]

_DATASET_KEY = re.compile(r"^datasets/([^/]+)/v(\d+)\.json$")

RAW_PREFIX = "raw/"
CLIPS_PREFIX = "clips/"
SHARDS_PREFIX = "shards/"
CURATED_PREFIX = "curated/"
DATASETS_PREFIX = "datasets/"


def clip_collections(visual_dim: int, text_dim: int) -> tuple[CollectionSpec, CollectionSpec]:
    return (
        CollectionSpec(VISUAL_COLLECTION, visual_dim, CLIP_SCALARS, max_str_length=CLIP_STR_MAX_BYTES),
        CollectionSpec(TEXT_COLLECTION, text_dim, CLIP_SCALARS, max_str_length=CLIP_STR_MAX_BYTES),
    )


@dataclass(frozen=True)
class AttributeLimits:
    """What a video's attributes may hold, so that everything downstream can store them: a value becomes
    a clip's ``source`` (a Milvus string field) or its caption, tags, the videos.ingested event and the
    webdataset samples, so a value is at most one clip string field long; keys are plain names."""

    max_entries: int = 64
    max_key_bytes: int = 128
    max_value_bytes: int = CLIP_STR_MAX_BYTES

    def problem(self, attributes: Mapping[str, str]) -> str | None:
        """Why ``attributes`` cannot be stored, or None."""
        if len(attributes) > self.max_entries:
            return f"at most {self.max_entries} entries, not {len(attributes)}"
        for key, value in attributes.items():
            if not key or len(key.encode()) > self.max_key_bytes or _CONTROL.search(key):
                return (f"key {key[:40]!r} must be 1 to {self.max_key_bytes} bytes (UTF-8) without control "
                        "characters")
            if len(value.encode()) > self.max_value_bytes:
                return (f"the value of {key!r} is {len(value.encode())} bytes (UTF-8); at most "
                        f"{self.max_value_bytes}, the length of a clip's string fields")
        return None


ATTRIBUTE_LIMITS = AttributeLimits()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def fit_str_field(value: str, max_bytes: int = CLIP_STR_MAX_BYTES) -> str:
    """``value`` cut to ``max_bytes`` of UTF-8 on a character boundary (a caption in a Milvus field; the
    record keeps all of it)."""
    data = value.encode()
    return value if len(data) <= max_bytes else data[:max_bytes].decode(errors="ignore")


def raw_file_key(video_id: str, name: str) -> str:
    """A file stored with an ingested video: the video itself, its sidecar, a simulator episode's arrays."""
    return f"{RAW_PREFIX}{video_id}/{name}"


def raw_video_key(video_id: str, ext: str) -> str:
    return raw_file_key(video_id, f"video.{ext}")


def raw_meta_key(video_id: str) -> str:
    return raw_file_key(video_id, "meta.json")


def raw_claim_key(video_id: str) -> str:
    """Held while one replica ingests the video (worldloom.core.claims)."""
    return raw_file_key(video_id, "ingest.claim")


def actions_key(video_id: str) -> str:
    return raw_file_key(video_id, "actions.safetensors")


def actions_meta_key(video_id: str) -> str:
    return raw_file_key(video_id, "actions.json")


def curated_marker_key(video_id: str, config_hash: str) -> str:
    return f"{CURATED_PREFIX}{video_id}/{config_hash}.json"


def curated_claim_key(video_id: str, config_hash: str) -> str:
    """Held while one replica curates the video with this config (worldloom.core.claims)."""
    return f"{CURATED_PREFIX}{video_id}/{config_hash}.claim"


def clip_file_key(clip_id: str, name: str) -> str:
    """A clip's rendition or picture, e.g. ``train.mp4``, ``thumb.jpg``."""
    return f"{CLIPS_PREFIX}{clip_id}/{name}"


def clip_meta_key(clip_id: str) -> str:
    return clip_file_key(clip_id, "meta.json")


def shard_key(config_hash: str, bucket: str, video_id: str, part: int) -> str:
    return f"{SHARDS_PREFIX}{config_hash}/{bucket}/{video_id}-{part:05d}.tar"


def run_key(run_id: str) -> str:
    return f"runs/{run_id}/run.json"


def run_summary_key(run_id: str) -> str:
    return f"runs/{run_id}/summary.parquet"


def dataset_key(name: str, version: int) -> str:
    return f"{DATASETS_PREFIX}{name}/v{version}.json"


def dataset_announced_key(name: str, version: int) -> str:
    """Written once datasets.created of this version was acknowledged."""
    return f"{DATASETS_PREFIX}{name}/v{version}.announced"


VideoStatus = Literal["stored", "ingested"]


class VideoRecord(BaseModel):
    """The sidecar of one ingested video (raw/<id>/meta.json); ingest writes it, curate reads it.

    `stored`: bytes and sidecar are durable; `ingested`: videos.ingested was also emitted."""

    video_id: str = Field(description="SHA-256 of the file content (hex)")
    uri: str
    metadata_uri: str
    filename: str
    source: Literal["upload", "import", "gymnasium"]
    size_bytes: int
    content_type: str
    info: dict[str, Any]
    attributes: dict[str, str] = {}
    status: VideoStatus
    event_id: str | None = None
    created_at: datetime
    ingested_at: datetime | None = None


class Rejection(BaseModel):
    """Why a clip was dropped: the filter (or stage) name, a sentence, and the measured value and
    threshold where there are numbers behind it. Filters, stages and stored records share this one type."""

    model_config = ConfigDict(frozen=True)

    filter: str
    reason: str
    value: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class ClipRecord(BaseModel):
    """Everything known about one clip; `status` says whether it made it into the training set."""

    clip_id: str
    video_id: str
    source: str = Field(description="where the video came from, e.g. its dataset attribute or file name")
    status: Literal["accepted", "rejected"]
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    duration_s: float
    fps: float
    width: int = Field(description="source width as displayed (rotation applied)")
    height: int
    caption: str = ""
    caption_source: str = ""
    tags: list[str] = []
    scores: dict[str, float] = {}
    descriptors: dict[str, Any] = {}
    rejections: list[Rejection] = []
    duplicate_of: str | None = None
    phash: list[str] = Field(default_factory=list, description="64-bit perceptual hashes (hex) of sampled frames")
    renditions: dict[str, str] = Field(default_factory=dict, description="name -> object key")
    rendition_info: dict[str, dict[str, float]] = Field(default_factory=dict, description="name -> width, height, fps, frames")
    shard: str | None = None
    config_hash: str
    created_at: datetime


class DatasetManifest(BaseModel):
    """What post-training consumes: a frozen, named, versioned list of clips with their URIs."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    description: str = ""
    created_at: datetime
    query: dict[str, Any] | None = None
    clip_ids: list[str]
    clips: list[dict[str, Any]] = Field(description="per clip: id, video_id, span, caption, rendition URIs")


def clip_row(record: ClipRecord, kind: RowKind, row_id: str, vector: Iterable[float]) -> dict[str, Any]:
    """One Milvus row: id, vector and exactly the CLIP_SCALARS, taken from the clip's record; string fields
    are cut to what the field holds (only a caption can be longer: ingest bounds the attributes)."""
    row: dict[str, Any] = {
        "id": row_id, "vector": [float(x) for x in vector], "clip_id": record.clip_id, "kind": kind,
        "video_id": record.video_id, "source": record.source, "caption": record.caption, "tags": record.tags,
        "duration_s": record.duration_s, "start_s": record.start_s, "end_s": record.end_s, "width": record.width,
        "height": record.height, "fps": record.fps, "config_hash": record.config_hash, "phash": ",".join(record.phash),
    }
    row.update({name: float(record.scores.get(score, 0.0)) for name, score in SCORE_SCALARS.items()})
    row.update({name: fit_str_field(row[name]) for name, kind in CLIP_SCALARS.items() if kind == "str"})
    return row


def read_clip(store: ObjectStore, clip_id: str) -> ClipRecord:
    """A clip's record; ObjectNotFound also for an id that cannot be a clip id (ids come from users)."""
    if not is_safe_id(clip_id):  # curated clip ids are 32 hex characters
        raise ObjectNotFound(clip_id)
    return store.get_record(clip_meta_key(clip_id), ClipRecord)


def iter_clip_records(store: ObjectStore) -> Iterator[ClipRecord]:
    """Every clip record in the store (accepted and rejected), in key order."""
    for info in store.list(CLIPS_PREFIX):
        if info.key.endswith("/meta.json"):
            try:
                yield store.get_record(info.key, ClipRecord)
            except ObjectNotFound:
                continue  # deleted while listing


def dataset_versions(store: ObjectStore, name: str | None = None) -> Iterator[tuple[str, int]]:
    """(name, version) of every stored manifest, for one dataset or all of them, in key order."""
    for info in store.list(f"{DATASETS_PREFIX}{name}/" if name else DATASETS_PREFIX):
        if (m := _DATASET_KEY.match(info.key)) and (name is None or m.group(1) == name):
            yield m.group(1), int(m.group(2))


def latest_dataset_versions(store: ObjectStore, name: str | None = None) -> dict[str, int]:
    """Dataset name -> its highest stored version, for one dataset or all of them."""
    latest: dict[str, int] = {}
    for found, version in dataset_versions(store, name):
        latest[found] = max(latest.get(found, 0), version)
    return latest


def read_dataset(store: ObjectStore, name: str, version: int | None = None) -> DatasetManifest:
    """A dataset manifest, the latest version when `version` is None; raises ObjectNotFound (InvalidKey
    for a name that is not one key segment)."""
    if version is None:
        version = latest_dataset_versions(store, name).get(name)
        if version is None:
            raise ObjectNotFound(f"{DATASETS_PREFIX}{name}/")
    return store.get_record(dataset_key(name, version), DatasetManifest)


# ----------------------------------------------------------------------------------- jobs and models
# A training job (tokenizer, world model; next: post-training, policies) keeps everything under one
# prefix; the job platform (worldloom.core.jobs) and the Ray workers share these keys:
#   <prefix>/<record file>         the registry record (state set by the service)
#   <prefix>/plan.json             the frozen inputs (exact train/val keys, resolved config), written at submit
#   <prefix>/progress.json         written by the workers (step, curves, final metrics)
#   <prefix>/cancel                cancel marker the workers poll
#   <prefix>/checkpoints/          resumable checkpoints (step folders + latest.json)
#   <prefix>/model/                the finished model: <name>.safetensors (+ .json sidecar)
# tokenizers/active.json           which tokenizer encodes clips.curated
# tokens/<tokenizer>/<clip>.tar    a clip's token/latent shard; <clip>.done marks its event as sent,
#                                  <clip>.claim is held while one worker encodes it

TOKENIZERS_ROOT = "tokenizers"
WORLD_MODELS_ROOT = "models"
TOKENIZER_RECORD = "job.json"
WORLD_MODEL_RECORD = "record.json"
TOKENIZER_FILE = "tokenizer.safetensors"
WORLD_MODEL_FILE = "world_model.safetensors"
WORLD_MODEL_ADAPTER_FILE = "adapter.safetensors"
ACTIVE_TOKENIZER_KEY = f"{TOKENIZERS_ROOT}/active.json"


def job_prefix(root: str, job_id: str) -> str:
    return f"{root}/{job_id}"


def progress_key(prefix: str) -> str:
    return f"{prefix}/progress.json"


def cancel_key(prefix: str) -> str:
    return f"{prefix}/cancel"


def plan_key(prefix: str) -> str:
    return f"{prefix}/plan.json"


def checkpoints_prefix(prefix: str) -> str:
    return f"{prefix}/checkpoints"


def model_dir(prefix: str) -> str:
    return f"{prefix}/model"


def tokenizer_prefix(tokenizer_id: str) -> str:
    return job_prefix(TOKENIZERS_ROOT, tokenizer_id)


def tokenizer_model_key(tokenizer_id: str) -> str:
    return f"{model_dir(tokenizer_prefix(tokenizer_id))}/{TOKENIZER_FILE}"


def world_model_prefix(model_id: str) -> str:
    return job_prefix(WORLD_MODELS_ROOT, model_id)


def world_model_key(model_id: str) -> str:
    return f"{model_dir(world_model_prefix(model_id))}/{WORLD_MODEL_FILE}"


def world_model_adapter_key(model_id: str) -> str:
    """A LoRA post-trained model kept apart from its base: only the adapter (loaded onto the base)."""
    return f"{model_dir(world_model_prefix(model_id))}/{WORLD_MODEL_ADAPTER_FILE}"


def token_shard_key(tokenizer_id: str, clip_id: str) -> str:
    return f"tokens/{tokenizer_id}/{clip_id}.tar"


def token_marker_key(tokenizer_id: str, clip_id: str) -> str:
    return f"tokens/{tokenizer_id}/{clip_id}.done"


def token_claim_key(tokenizer_id: str, clip_id: str) -> str:
    """Held while one worker encodes the clip (worldloom.core.claims)."""
    return f"tokens/{tokenizer_id}/{clip_id}.claim"


def backfill_claim_key(tokenizer_id: str) -> str:
    return f"{tokenizer_prefix(tokenizer_id)}/backfill.claim"


def backfill_done_key(tokenizer_id: str) -> str:
    """Written when the backfill after activation has visited every clip (its counts)."""
    return f"{tokenizer_prefix(tokenizer_id)}/backfill.json"



# RL in imagination (services/rlsim): an experiment is a job (record, plan, progress, checkpoints per
# iteration); its policy lands in the policy registry with lineage.
#   experiments/<id>/record.json   ExperimentRecord; checkpoints/ hold one folder per finished iteration
#   experiments/<id>/model/        the updated world model (+ the tokenizer when the experiment trained one)
#   policies/<id>/record.json      PolicyRecord (lineage: world model, episodes, experiment)
#   policies/<id>/model/           policy.safetensors (+ .json sidecar)
#   policies/<id>/evaluations/<evaluation>/  returns.json and episode videos of POST .../evaluate

EXPERIMENTS_ROOT = "experiments"
POLICIES_ROOT = "policies"
EXPERIMENT_RECORD = "record.json"
POLICY_RECORD = "record.json"
POLICY_FILE = "policy.safetensors"


def experiment_prefix(experiment_id: str) -> str:
    return job_prefix(EXPERIMENTS_ROOT, experiment_id)


def experiment_world_model_key(experiment_id: str) -> str:
    return f"{model_dir(experiment_prefix(experiment_id))}/{WORLD_MODEL_FILE}"


def experiment_tokenizer_key(experiment_id: str) -> str:
    return f"{model_dir(experiment_prefix(experiment_id))}/{TOKENIZER_FILE}"


def policy_prefix(policy_id: str) -> str:
    return job_prefix(POLICIES_ROOT, policy_id)


def policy_key(policy_id: str) -> str:
    return f"{model_dir(policy_prefix(policy_id))}/{POLICY_FILE}"


def policy_evaluation_prefix(policy_id: str, evaluation_id: str) -> str:
    return f"{policy_prefix(policy_id)}/evaluations/{evaluation_id}"

# --------------------------------------------------------------------------------------------- layout


def layout() -> list[tuple[str, str]]:
    """Every key function of this module with the key it makes from placeholder arguments (``<video_id>``),
    in definition order: the object layout ``docs/architecture.md`` shows (a test keeps the two equal;
    ``python -m worldloom.core.catalog`` prints the table)."""
    import inspect
    import sys

    module = sys.modules[__name__]
    rows = []
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if fn.__module__ != __name__ or not name.endswith(("_key", "_prefix", "_dir")):
            continue
        if name == "job_prefix":
            continue  # the generic form of tokenizer_prefix / world_model_prefix
        params = inspect.signature(fn).parameters.values()
        args = [1 if p.annotation == "int" else "<job prefix>" if p.name == "prefix" else f"<{p.name}>" for p in params]
        rows.append((inspect.getsourcelines(fn)[1], name, fn(*args)))
    return [(name, key) for _, name, key in sorted(rows)]


def layout_table() -> str:
    lines = ["| catalog function | key |", "|---|---|"]
    lines += [f"| `{name}` | `{key}` |" for name, key in layout()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(layout_table())
