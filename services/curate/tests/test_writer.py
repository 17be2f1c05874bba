"""write stage: every output of a clip from one owner — renditions, record, shard, vector rows, event."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import webdataset as wds

from worldloom.core import events
from worldloom.core.catalog import (
    TEXT_COLLECTION, VISUAL_COLLECTION, clip_collections, clip_file_key, clip_meta_key, read_clip,
)
from worldloom.curate.writer import WriteStage
from worldloom.models.text_embedder import DIM as TEXT_DIM
from worldloom.testkit.media import clip_task
from worldloom.testkit.uploads import published
from worldloom.video import synthetic, visual_embed
from worldloom.video.pipeline import VideoTask
from worldloom.video.stages import TranscodeStage


def _unit(seed: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_accepted_and_rejected_clips_are_written_once_each(env, tmp_path: Path) -> None:
    for spec in clip_collections(visual_embed.DIM, TEXT_DIM):
        env.index.ensure_collection(spec)
    src = synthetic.write_video(tmp_path / "v.mp4", 160, 120, 48, 24)
    task = VideoTask("v" * 64, src, tmp_path / "work", {"fps": 24.0, "width": 160, "height": 120},
                     {"dataset": "synthetic"})
    task.workdir.mkdir()
    task.clips = [clip_task(f"{i:032x}", synthetic.pan_frames(frames=24), 24.0, 24 * i) for i in range(2)]
    TranscodeStage().process(task)
    keep, drop = task.clips
    keep.caption, keep.tags, keep.scores = "A box moves.", ["synthetic"], {"sharpness": 80.0, "motion_mean": 3.0}
    keep.visual_embedding, keep.keyframe_embeddings = _unit(0, visual_embed.DIM), np.stack([_unit(k, visual_embed.DIM)
                                                                                          for k in range(3)])
    keep.text_embedding, keep.phash = _unit(9, TEXT_DIM), [0xFF00FF00FF00FF00]
    drop.reject("min_motion", "too static (motion 0.01 < 0.15)", 0.01, 0.15)
    task.drop_rejected()

    WriteStage(env.store, env.index, env.bus, "cfg").process(task)

    assert [r.clip_id for r in task.records] == [keep.clip_id, drop.clip_id]
    accepted, rejected = (read_clip(env.store, c.clip_id) for c in (keep, drop))
    assert accepted.status == "accepted" and accepted.source == "synthetic" and accepted.config_hash == "cfg"
    assert accepted.renditions == {n: clip_file_key(keep.clip_id, n) for n in keep.renditions}
    assert all(env.store.exists(k) for k in accepted.renditions.values())
    assert accepted.rendition_info["train.mp4"]["width"] == 64 and accepted.phash == ["ff00ff00ff00ff00"]
    assert rejected.status == "rejected" and rejected.renditions == {} and rejected.shard is None
    assert rejected.rejections[0].to_dict() == {"filter": "min_motion", "reason": "too static (motion 0.01 < 0.15)",
                                                "value": 0.01, "threshold": 0.15}
    assert not env.store.exists(clip_file_key(drop.clip_id, "train.mp4"))

    assert task.shard_keys == [accepted.shard] == [f"shards/cfg/64x64/0-2s/{'v' * 64}-00000.tar"]
    sample = next(iter(wds.WebDataset(str(env.store.root / accepted.shard), shardshuffle=False)))
    assert sample["__key__"] == keep.clip_id and json.loads(sample["json"])["caption"] == "A box moves."

    assert env.index.count(VISUAL_COLLECTION) == 1 + 3 and env.index.count(TEXT_COLLECTION) == 1
    row = env.index.get(VISUAL_COLLECTION, [keep.clip_id], ["kind", "sharpness", "source"])[0]
    assert (row["kind"], row["sharpness"], row["source"]) == ("clip", 80.0, "synthetic")

    sent = [e.clip_curated for e in published(env.bus, events.TOPIC_CLIPS_CURATED)]
    assert [e.clip_id for e in sent] == [keep.clip_id]
    assert sent[0].metadata_uri == env.store.uri(clip_meta_key(keep.clip_id)) and sent[0].width == 64
