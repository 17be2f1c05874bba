"""The curation config takes every default from the library class that runs it, so the API's documented
defaults are what runs; sections only add the bounds of a request."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worldloom.curate.config import SIMULATOR_PROFILE, CurationConfig, config_with
from worldloom.curate.writer import WriteStage
from worldloom.video.filters import FilterConfig
from worldloom.video.split import SplitConfig
from worldloom.video.stages import DedupStage, TranscodeStage


def test_defaults_are_the_library_defaults() -> None:
    config = CurationConfig()
    assert config.split.to_split_config() == SplitConfig()
    assert (SplitConfig().min_clip_s, SplitConfig().stride_clip_s, SplitConfig().stride_s) == (1.0, 4.0, 4.0)
    assert config.filters == FilterConfig()
    assert TranscodeStage(**config.transcode.model_dump()) == TranscodeStage()
    assert (config.dedup.max_phash_distance, config.dedup.semantic_threshold) == (
        DedupStage().max_phash_distance, DedupStage().semantic_threshold)
    assert config.shards.max_clips_per_shard == WriteStage.shard_max_clips


def test_overrides_bounds_and_profiles() -> None:
    sim = config_with(SIMULATOR_PROFILE)
    assert sim.filters.max_shake is None and sim.filters.min_motion == FilterConfig().min_motion
    assert sim.config_hash() != CurationConfig().config_hash()
    for bad in ({"filters": {"colour": 1}}, {"split": {"threshold": -1}}, {"transcode": {"crf": 99}}):
        with pytest.raises(ValidationError):
            CurationConfig.model_validate(bad)
    with pytest.raises(ValueError, match="unknown curation section"):
        config_with({"colour": {}})
