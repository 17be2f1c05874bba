"""A curation config: what a run does. Its hash is part of every output key, so the same config on the
same video is recognised (nothing rewritten) and a new config produces a new, separate set of clips.

Every default comes from the library class that uses it (SplitConfig, the stage dataclasses, FilterConfig
itself as the filters section), so what the API documents is what runs; a section only adds the bounds
a request must respect.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worldloom.curate.writer import WriteStage
from worldloom.video.filters import FilterConfig
from worldloom.video.split import SplitConfig
from worldloom.video.stages import AnnotateStage, DedupStage, TranscodeStage

_SPLIT = SplitConfig()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitSection(_Section):
    """The SplitConfig fields a request may set (the detector's internals keep the library's values)."""

    method: Literal["shots", "stride"] = _SPLIT.method
    threshold: float = Field(_SPLIT.threshold, gt=0, le=255, description="content-change score that counts as a cut")
    min_scene_len: int = Field(_SPLIT.min_scene_len, ge=1, description="frames; shorter shots merge into the next")
    min_clip_s: float = Field(_SPLIT.min_clip_s, ge=0)
    max_clip_s: float = Field(_SPLIT.max_clip_s, gt=0, le=600, description="longer shots are re-split evenly")
    trim_s: float = Field(_SPLIT.trim_s, ge=0, le=5, description="cut off both ends of a shot (transition frames)")
    stride_clip_s: float = Field(_SPLIT.stride_clip_s, gt=0)
    stride_s: float = Field(_SPLIT.stride_s, gt=0)

    def to_split_config(self) -> SplitConfig:
        return SplitConfig(**self.model_dump())


class TranscodeSection(_Section):
    preview_short_side: int = Field(TranscodeStage.preview_short_side, ge=64, le=1080)
    train_size: int = Field(TranscodeStage.train_size, ge=16, le=512, description="square training rendition, pixels")
    train_fps: float | None = Field(TranscodeStage.train_fps, gt=0, le=60,
                                    description="resample the training clip (None keeps fps)")
    crf: int = Field(TranscodeStage.crf, ge=10, le=40)


class AnnotateSection(_Section):
    use_metadata: bool = AnnotateStage.use_metadata
    use_vlm: bool = Field(True, description="ask the configured vision-language model, if one is configured")


class DedupSection(_Section):
    max_phash_distance: float = Field(DedupStage.max_phash_distance, ge=0, le=64)
    semantic_threshold: float = Field(DedupStage.semantic_threshold, gt=0, le=1.0)
    against_index: bool = Field(True, description="also compare with clips of other videos already indexed")


class ShardSection(_Section):
    max_clips_per_shard: int = Field(WriteStage.shard_max_clips, ge=1, le=100_000)


class CurationConfig(_Section):
    split: SplitSection = SplitSection()
    transcode: TranscodeSection = TranscodeSection()
    filters: FilterConfig = Field(default_factory=FilterConfig, description="thresholds; null turns a filter off")
    annotate: AnnotateSection = AnnotateSection()
    dedup: DedupSection = DedupSection()
    shards: ShardSection = ShardSection()

    def config_hash(self, vlm_model: str | None = None) -> str:
        doc = self.model_dump(mode="json")
        doc["annotate"]["vlm_model"] = vlm_model if self.annotate.use_vlm else None
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


#: overrides for rendered simulator footage (the ingest service's gymnasium source): a white or flat
#: background is not overexposure, a rendered camera does not shake, and episodes of one environment look
#: alike by design, so near-duplicate removal would throw away all but one
SIMULATOR_PROFILE: dict[str, Any] = {
    "filters": {"max_overexposed_fraction": None, "max_shake": None},
    "dedup": {"max_phash_distance": 0, "semantic_threshold": 1.0, "against_index": False},
}


def config_with(overrides: dict[str, Any] | None) -> CurationConfig:
    """The default config with per-section ``overrides`` (``{"filters": {"max_shake": None}}``) applied."""
    base = CurationConfig().model_dump()
    for section, values in (overrides or {}).items():
        if section not in base or not isinstance(values, dict):
            raise ValueError(f"unknown curation section {section!r}")
        base[section].update(values)
    return CurationConfig.model_validate(base)
