"""A curation config: what a run does. Its hash is part of every output key, so the same config on the
same video is recognised (nothing rewritten) and a new config produces a new, separate set of clips."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from worldloom.video.filters import FilterConfig
from worldloom.video.split import SplitConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitSection(_Section):
    method: Literal["shots", "stride"] = "shots"
    threshold: float = Field(27.0, gt=0, le=255, description="content-change score that counts as a cut")
    min_scene_len: int = Field(15, ge=1, description="frames; shorter shots merge into the next")
    min_clip_s: float = Field(1.0, ge=0)
    max_clip_s: float = Field(10.0, gt=0, le=600, description="longer shots are re-split evenly")
    trim_s: float = Field(0.1, ge=0, le=5, description="cut off both ends of a shot (transition frames)")
    stride_clip_s: float = Field(4.0, gt=0)
    stride_s: float = Field(4.0, gt=0)

    def to_split_config(self) -> SplitConfig:
        return SplitConfig(
            method=self.method, threshold=self.threshold, min_scene_len=self.min_scene_len,
            min_clip_s=self.min_clip_s, max_clip_s=self.max_clip_s, trim_s=self.trim_s,
            stride_clip_s=self.stride_clip_s, stride_s=self.stride_s,
        )


class TranscodeSection(_Section):
    preview_short_side: int = Field(256, ge=64, le=1080)
    train_size: int = Field(64, ge=16, le=512, description="square training rendition, pixels")
    train_fps: float | None = Field(None, gt=0, le=60, description="resample the training clip (None keeps fps)")
    crf: int = Field(23, ge=10, le=40)


class FilterSection(_Section):
    """Thresholds; null turns a filter off."""

    min_duration_s: float | None = 1.0
    max_duration_s: float | None = 120.0
    min_motion: float | None = 0.15
    max_motion: float | None = 40.0
    max_shake: float | None = 0.04
    min_sharpness: float | None = 30.0
    max_black_fraction: float | None = 0.5
    max_overexposed_fraction: float | None = 0.5
    max_frozen_fraction: float | None = 0.5

    def to_filter_config(self) -> FilterConfig:
        return FilterConfig(**self.model_dump())


class AnnotateSection(_Section):
    use_metadata: bool = True
    use_vlm: bool = Field(True, description="ask the configured vision-language model, if one is configured")


class DedupSection(_Section):
    max_phash_distance: float = Field(6.0, ge=0, le=64)
    semantic_threshold: float = Field(0.985, gt=0, le=1.0)
    against_index: bool = Field(True, description="also compare with clips of other videos already indexed")


class ShardSection(_Section):
    max_clips_per_shard: int = Field(256, ge=1, le=100_000)


class CurationConfig(_Section):
    split: SplitSection = SplitSection()
    transcode: TranscodeSection = TranscodeSection()
    filters: FilterSection = FilterSection()
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
