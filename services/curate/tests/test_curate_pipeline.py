"""The curation pipeline on real videos: boundaries, orientation, timestamps, outputs, idempotency."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from worldloom.core import events
from worldloom.core.catalog import ClipRecord, iter_clip_records
from worldloom.curate.config import CurationConfig
from worldloom.testkit.uploads import published
from worldloom.video import synthetic
from worldloom.video.probe import probe


def _records(env) -> list[ClipRecord]:
    return list(iter_clip_records(env.store))


def _run(svc, ids, config=None):
    config = config or CurationConfig()
    return svc.execute(svc.new_run(ids, config), config)


def test_testvideo_clips_follow_the_shot_goldens(env, shared_data):
    vid = env.ingest(shared_data / "video/pyscenedetect/testvideo.mp4")
    svc = env.curate_service()
    run = _run(svc, [vid])
    assert run.state == "succeeded" and run.percent_done == 100.0
    cuts = [30, 180, 394]  # ContentDetector goldens (goldens/testvideo.mp4.*.json)
    recs = _records(env)
    assert recs and run.clips_total == len(recs)
    for r in recs:  # no clip crosses a golden cut (within one frame)
        assert not any(r.start_frame + 1 < c < r.end_frame - 1 for c in cuts), (r.start_frame, r.end_frame)
        assert r.rejections or r.status == "accepted"
        for rej in r.rejections:
            assert rej.reason and rej.filter
    assert set(run.stage_counts) == {"split", "transcode", "filter", "annotate", "embed_visual", "dedup",
                                     "embed_text", "write"}
    assert sum(run.rejections_by_filter.values()) >= run.clips_total - run.clips_accepted


def test_rotation_is_applied_and_timestamps_start_at_zero(env, shared_data):
    rot = env.ingest(shared_data / "video/pyscenedetect/issue-134-rotate.mp4")
    late = env.ingest(shared_data / "video/pyscenedetect/delayed_start.mp4")
    cfg = CurationConfig(filters={"min_duration_s": 0.5, "min_motion": None, "max_frozen_fraction": None})
    cfg.split.min_clip_s = 0.5
    run = _run(env.curate_service(), [rot, late], cfg)
    assert run.state == "succeeded"
    recs = _records(env)
    rotated = [r for r in recs if r.video_id == rot and r.status == "accepted"]
    assert rotated
    for r in rotated:
        assert (r.width, r.height) == (544, 1280)  # displayed portrait
        info = probe(env.store.root / r.renditions["preview.mp4"])
        assert info.rotation == 0 and info.height > info.width
    delayed = sorted((r for r in recs if r.video_id == late), key=lambda r: r.start_frame)
    assert delayed and delayed[0].start_s < 0.2  # relative to the stream start, not the container's 1.07 s


def test_outputs_shards_parquet_vectors_events(env, shared_data):
    ep = shared_data / "bridge/videos/train/1432/rgb.mp4"
    ann = json.loads((shared_data / "bridge/annotation/train/1432.json").read_text())
    vid = env.ingest(ep, {"dataset": "bridge", "instruction": ann["texts"][0]})
    run = _run(env.curate_service(), [vid])
    accepted = [r for r in _records(env) if r.status == "accepted"]
    assert accepted and all(ann["texts"][0].rstrip(".") in r.caption for r in accepted)
    assert all(r.caption_source.startswith("metadata") and "bridge" in r.tags for r in accepted)
    for r in accepted:
        train = probe(env.store.root / r.renditions["train.mp4"])
        assert (train.width, train.height) == (64, 64)
        assert r.rendition_info["train.mp4"]["width"] == 64 and r.phash and r.shard
    shard_keys = {r.shard for r in accepted}
    samples = []
    for key in shard_keys:
        assert key.startswith(f"shards/{run.config_hash}/64x64/")
        samples += list(wds.WebDataset(str(env.store.root / key), shardshuffle=False))
    assert {s["__key__"] for s in samples} == {r.clip_id for r in accepted}
    assert all(s["mp4"][4:8] == b"ftyp" and json.loads(s["json"])["video_id"] == vid for s in samples)
    table = pq.read_table(io.BytesIO(env.store.get_bytes(env.store.key_from_uri(run.summary_uri))))
    assert table.num_rows == run.clips_total and "rejected_by" in table.column_names
    assert env.index.count("clips_text") == len(accepted)
    evs = published(env.bus, events.TOPIC_CLIPS_CURATED)
    assert sorted(e.clip_curated.clip_id for e in evs) == sorted(r.clip_id for r in accepted)
    e = evs[0]
    assert list(e.lineage) == [vid, run.config_hash] and e.clip_curated.renditions["train.mp4"].startswith("file://")


def test_same_video_same_config_writes_nothing_new(env, shared_data):
    vid = env.ingest(shared_data / "video/sintel/sintel_clip_10s.mp4")
    svc = env.curate_service()
    first = _run(svc, [vid])
    before = {o.key: (o.size, o.last_modified) for o in env.store.list("clips/")}
    events_before = len(env.bus.messages(events.TOPIC_CLIPS_CURATED))
    rows_before = env.index.count("clips_visual")
    second = _run(svc, [vid])
    assert second.videos[0].state == "skipped" and second.videos[0].clips_total == first.clips_total
    assert {o.key: (o.size, o.last_modified) for o in env.store.list("clips/")} == before
    assert len(env.bus.messages(events.TOPIC_CLIPS_CURATED)) == events_before
    assert env.index.count("clips_visual") == rows_before
    other = CurationConfig(split={"method": "stride", "stride_clip_s": 3.0, "stride_s": 3.0})
    third = _run(svc, [vid], other)
    assert third.config_hash != first.config_hash and third.videos[0].state == "done"


def test_duplicate_video_content_is_deduplicated_against_the_index(env, shared_data, tmp_path):
    src = shared_data / "bridge/videos/train/83/rgb.mp4"
    a = env.ingest(src, {"dataset": "bridge"})
    svc = env.curate_service()
    _run(svc, [a])
    # the same footage re-encoded at another size: new bytes, new video id, same content
    from worldloom.video.transcode import transcode_clip

    copy = transcode_clip(src, tmp_path / "copy.mp4", 0, 10_000, short_side=360, crf=30)
    b = env.ingest(copy.path, {"dataset": "bridge"})
    _run(svc, [b])
    dups = [r for r in _records(env) if r.video_id == b]
    assert dups and all(r.status == "rejected" and r.duplicate_of for r in dups)
    assert all(any(x.filter.startswith("duplicate") and "duplicate of clip" in x.reason for x in r.rejections) for r in dups)


def test_broken_mid_stream_keeps_the_good_part(env, tmp_path):
    good = synthetic.write_video(tmp_path / "long.mp4", width=160, height=120, frames=240, fps=24, faststart=True)
    broken = synthetic.write_truncated(good, tmp_path / "broken.mp4", 0.6)
    # ingest refuses truncated files, so ingest the good one and let it rot in the store afterwards
    from worldloom.video.ingest import IngestService
    from worldloom.video.limits import VideoLimits

    svc_i = IngestService(env.store, env.bus, VideoLimits())
    vid = svc_i.ingest_file(good, "long.mp4").video.video_id
    key = env.store.key_from_uri(svc_i.get(vid).uri)
    env.store.put_bytes(key, broken.read_bytes())
    run = _run(env.curate_service(), [vid], CurationConfig(filters={"min_motion": None}))
    video = run.videos[0]
    assert video.state == "done" and video.error and "decoding stopped" in video.error
    assert video.clips_total >= 1


def test_unknown_video_is_refused(env):
    from worldloom.curate.service import CurateError

    with pytest.raises(CurateError, match="not ingested"):
        env.curate_service().new_run(["0" * 64], CurationConfig())


def test_attributes_at_the_ingest_limit_curate_into_milvus(env, shared_data):
    """The longest source and caption ingest accepts fit the clip collections' string fields: Milvus counts
    bytes, so a caption is cut to the field's bytes (the record keeps all of it), never refused."""
    from worldloom.core.catalog import ATTRIBUTE_LIMITS

    limit = ATTRIBUTE_LIMITS.max_value_bytes
    vid = env.ingest(shared_data / "bridge/videos/train/1432/rgb.mp4",
                     {"dataset": "d" * limit, "instruction": "é" * (limit // 2)})
    run = _run(env.curate_service(), [vid])
    assert run.state == "succeeded", run.error
    accepted = [r for r in _records(env) if r.status == "accepted"]
    assert accepted and env.index.count("clips_text") == len(accepted)
    row = env.index.get("clips_text", [accepted[0].clip_id], ["caption", "source"])[0]
    assert row["source"] == "d" * limit and len(row["caption"].encode()) <= limit
    assert accepted[0].caption.startswith(row["caption"]) and len(accepted[0].caption.encode()) > limit


def test_no_clip_record_is_visible_before_its_vectors_and_events(env, shared_data):
    """Outputs, then the records that make them visible, then the events, then the marker: when the vector
    index refuses the rows (here: its caption collection is gone), no clip record exists for the catalog
    readers (training selection, datasets) to pick up, and no event or marker; the redelivery completes it."""
    from worldloom.core.catalog import TEXT_COLLECTION, clip_collections, curated_marker_key
    from worldloom.models.text_embedder import DIM as TEXT_DIM
    from worldloom.video import visual_embed

    vid = env.ingest(shared_data / "bridge/videos/train/1432/rgb.mp4", {"dataset": "bridge"})
    svc = env.curate_service()
    env.index.drop(TEXT_COLLECTION)
    run = _run(svc, [vid])
    assert run.videos[0].state == "failed" and not run.videos[0].permanent
    assert _records(env) == [], "clip records were written although their vectors were not"
    assert published(env.bus, events.TOPIC_CLIPS_CURATED) == []
    assert not env.store.exists(curated_marker_key(vid, run.config_hash))
    env.index.ensure_collection(clip_collections(visual_embed.DIM, TEXT_DIM)[1])
    again = _run(svc, [vid])
    assert again.videos[0].state == "done"
    accepted = [r for r in _records(env) if r.status == "accepted"]
    assert accepted and len(published(env.bus, events.TOPIC_CLIPS_CURATED)) == len(accepted)
    assert env.store.exists(curated_marker_key(vid, run.config_hash))


def test_a_re_emit_after_a_crash_is_the_same_event(env, shared_data):
    """A crash after the clips.curated events and before the marker (the state a kill -9 there leaves:
    events sent, no marker) redoes the video; the re-emitted events carry the same ids (clip id + config
    hash), so consumers drop the copies by id."""
    from worldloom.core.catalog import curated_marker_key

    vid = env.ingest(shared_data / "bridge/videos/train/1432/rgb.mp4", {"dataset": "bridge"})
    svc = env.curate_service()
    first = _run(svc, [vid])
    sent = published(env.bus, events.TOPIC_CLIPS_CURATED)
    assert sent and first.videos[0].state == "done"
    env.store.delete(curated_marker_key(vid, first.config_hash))
    assert _run(svc, [vid]).videos[0].state == "done"
    again = published(env.bus, events.TOPIC_CLIPS_CURATED)[len(sent):]
    assert sorted(e.event_id for e in again) == sorted(e.event_id for e in sent)
    for e in sent:
        assert e.event_id == events.effect_id(events.TOPIC_CLIPS_CURATED, e.clip_curated.clip_id, first.config_hash)
