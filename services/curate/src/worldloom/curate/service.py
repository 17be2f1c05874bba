"""Curation of ingested videos: event-driven (videos.ingested) and on demand (curation runs)."""

from __future__ import annotations

import io
import json
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import Counter, Histogram

from worldloom.core import events
from worldloom.core.bus import Bus, PermanentError
from worldloom.core.catalog import (
    CURATED_PREFIX,
    SCORE_SCALARS,
    VISUAL_COLLECTION,
    ClipRecord,
    VideoRecord,
    clip_collections,
    curated_claim_key,
    curated_marker_key,
    raw_meta_key,
    read_clip,
    run_summary_key,
)
from worldloom.core.claims import Claims
from worldloom.core.errors import Refusal
from worldloom.core.ids import is_safe_id
from worldloom.core.scratch import scratch_prefix, without_paths
from worldloom.core.store import InvalidKey, ObjectNotFound, ObjectStore
from worldloom.core.vectors import VectorIndex
from worldloom.curate.config import CurationConfig, config_with
from worldloom.curate.runs import RunTracker, load_run
from worldloom.curate.schemas import CurationRun, PipelineInfo, VideoOutcome
from worldloom.curate.settings import CurateSettings
from worldloom.curate.text_stage import TextEmbedStage
from worldloom.curate.writer import WriteStage
from worldloom.video import stages, visual_embed
from worldloom.video.errors import VideoRejected
from worldloom.video.pipeline import Pipeline, VideoTask
from worldloom.video.stages.annotate import VLM_ERROR
from worldloom.video.vlm import OpenAIVisionCaptioner

log = logging.getLogger("worldloom.curate")
VIDEOS = Counter("worldloom_curate_videos_total", "Videos curated", ["outcome"])
CLIPS = Counter("worldloom_curate_clips_total", "Clips by outcome", ["outcome"])
VIDEO_SECONDS = Histogram("worldloom_curate_video_seconds", "Wall time per video",
                          buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900))


class CurateError(Refusal):
    """A refused curation request."""


class CurateService:
    def __init__(self, store: ObjectStore, bus: Bus, index: VectorIndex, settings: CurateSettings,
                 text_embedder_factory: Callable[[], Any] | None = None, claims: Claims | None = None,
                 claim_wait_s: float = 900.0) -> None:
        from worldloom.models.text_embedder import DIM as TEXT_DIM
        from worldloom.models.text_embedder import shared_text_embedder

        self.store, self.bus, self.index, self.settings = store, bus, index, settings
        self.claims = claims or Claims(store, lease_s=settings.claim_lease_s)
        self.claim_wait_s = claim_wait_s
        self.text_embedder_factory = text_embedder_factory or shared_text_embedder
        for spec in clip_collections(visual_embed.DIM, TEXT_DIM):
            index.ensure_collection(spec)
        self.captioner = None
        if settings.vlm_url:
            key = settings.vlm_api_key.get_secret_value() if settings.vlm_api_key else None
            self.captioner = OpenAIVisionCaptioner(settings.vlm_url, settings.vlm_model, key, settings.vlm_timeout_s,
                                                   retries=settings.vlm_retries,
                                                   retry_backoff_s=settings.vlm_retry_backoff_s)
        self._pipelines: dict[str, Pipeline] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curation-run")

    # configuration -------------------------------------------------------------------------------
    def config_hash(self, config: CurationConfig) -> str:
        return config.config_hash(self.settings.vlm_model if self.captioner else None)

    def pipeline(self, config: CurationConfig) -> Pipeline:
        h = self.config_hash(config)
        with self._lock:
            if h not in self._pipelines:
                dedup = config.dedup
                self._pipelines[h] = Pipeline([
                    stages.SplitStage(config.split.to_split_config(), h),
                    stages.TranscodeStage(**config.transcode.model_dump()),
                    stages.FilterStage(config.filters),
                    stages.AnnotateStage(config.annotate.use_metadata,
                                         self.captioner if config.annotate.use_vlm else None),
                    stages.VisualEmbedStage(),
                    stages.DedupStage(dedup.max_phash_distance, dedup.semantic_threshold,
                                      self._neighbours if dedup.against_index else None),
                    TextEmbedStage(self.text_embedder_factory),
                    WriteStage(self.store, self.index, self.bus, h, config.shards.max_clips_per_shard),
                ])
            return self._pipelines[h]

    def describe_pipeline(self, config: CurationConfig | None = None) -> PipelineInfo:
        config = config or CurationConfig()
        return PipelineInfo(config_hash=self.config_hash(config), config=config.model_dump(mode="json"),
                            stages=self.pipeline(config).describe())

    def _neighbours(self, vector: np.ndarray, exclude_video: str, k: int) -> list[tuple[str, float, list[int]]]:
        hits = self.index.search(VISUAL_COLLECTION, [vector.tolist()], limit=k,
                                 filter=f'kind == "clip" and video_id != "{exclude_video}"',
                                 output_fields=["phash"])[0]
        return [(h.id, h.score, [int(x, 16) for x in (h.fields.get("phash") or "").split(",") if x]) for h in hits]

    # one video -------------------------------------------------------------------------------------
    def curate_video(self, video_id: str, config: CurationConfig, tracker: RunTracker, index: int) -> VideoOutcome:
        """Curates one video with ``config`` unless its marker says it is done; one claim per (video,
        config) in the store makes that once across replicas (a partition moved in a rebalance, an API run
        next to the consumer): the other waits for the marker and reports the video skipped."""
        outcome = tracker.video(video_id)
        h = self.config_hash(config)
        done = self.claims.run_once(
            curated_claim_key(video_id, h), lambda: self._finished(video_id, h) is not None,
            lambda: self._curate(video_id, config, h, tracker, index, outcome),
            wait_s=self.claim_wait_s, poll_s=1.0, renew_every_s=self.claims.lease_s / 5)
        if done is not None:
            return done
        marker = self._finished(video_id, h)
        assert marker is not None  # run_once returns None only once the marker is there
        outcome.state = "skipped"  # same video, same config: already curated, write nothing
        outcome.clips_total, outcome.clips_accepted = marker["clips_total"], len(marker["accepted"])
        outcome.captions_fallback = len(marker.get("vlm_fallback", []))
        VIDEOS.labels("skipped").inc()
        return outcome

    def _marker(self, video_id: str, config_hash: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get_bytes(curated_marker_key(video_id, config_hash)))
        except ObjectNotFound:
            return None

    def _finished(self, video_id: str, config_hash: str) -> dict[str, Any] | None:
        """The video's marker for this config if curation with it is complete: not while clips it names
        were captioned without the VLM that failed them and a VLM is configured (they are curated again)."""
        marker = self._marker(video_id, config_hash)
        if marker is not None and marker.get("vlm_fallback") and self.captioner is not None:
            return None
        return marker

    def recaption_run(self, config: CurationConfig) -> CurationRun:
        """A run over every video whose marker for ``config`` records fallback captions."""
        if self.captioner is None:
            raise CurateError(409, "no_vlm", "no VLM is configured (WORLDLOOM_CURATE_VLM_URL): nothing can recaption")
        h = self.config_hash(config)
        videos = [info.key.split("/")[1] for info in self.store.list(CURATED_PREFIX)
                  if info.key == curated_marker_key(info.key.split("/")[1], h)
                  and (self._marker(info.key.split("/")[1], h) or {}).get("vlm_fallback")]
        if not videos:
            raise CurateError(404, "nothing_to_recaption", f"no video has fallback captions with config {h}")
        return self.new_run(videos[: self.settings.max_videos_per_run], config)

    def _curate(self, video_id: str, config: CurationConfig, h: str, tracker: RunTracker, index: int,
                outcome: VideoOutcome) -> VideoOutcome:
        """The pipeline over one video, then its marker (the caller holds the video's claim)."""
        try:
            raw = self.store.get_record(raw_meta_key(video_id), VideoRecord)
        except ObjectNotFound:
            raise CurateError(404, "unknown_video", f"no ingested video {video_id}") from None
        outcome.state = "running"
        tracker.save()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=scratch_prefix("curate")) as tmp:
            local = Path(tmp) / "source"
            try:
                self.store.download(self.store.key_from_uri(raw.uri), str(local))
            except (ObjectNotFound, InvalidKey) as exc:
                raise CurateError(404, "missing_raw_video", f"raw video of {video_id} is missing: {exc}") from None
            task = VideoTask(video_id, local, Path(tmp) / "work", raw.info, raw.attributes)
            task.workdir.mkdir()
            stats = self.pipeline(config).run(task, lambda _n, done, total: tracker.progress(index, done, total))
        records = task.records
        accepted = [r for r in records if r.status == "accepted"]
        tracker.add_stage_counts(stats)
        tracker.add_rejections([rej.filter for r in records for rej in r.rejections])
        tracker.add_video(float(raw.info.get("duration_s", 0.0)), _summary_rows(records))
        # captions that fell back while the VLM failed: recorded, so a later run (recaption) redoes them
        fallback = [r.clip_id for r in accepted if VLM_ERROR in r.descriptors]
        outcome.clips_total, outcome.clips_accepted = len(records), len(accepted)
        outcome.captions_fallback = len(fallback)
        outcome.error = without_paths("; ".join(task.errors)) or None
        outcome.state = "done"
        marker = {"video_id": video_id, "config_hash": h, "clips_total": len(records),
                  "accepted": [r.clip_id for r in accepted], "rejected": [r.clip_id for r in records if r.status != "accepted"],
                  "vlm_fallback": fallback, "errors": task.errors, "shards": task.shard_keys,
                  "finished_at": datetime.now(timezone.utc).isoformat()}
        self.store.put_bytes(curated_marker_key(video_id, h), json.dumps(marker, indent=2).encode(), "application/json")
        VIDEO_SECONDS.observe(time.perf_counter() - start)
        VIDEOS.labels("curated").inc()
        CLIPS.labels("accepted").inc(len(accepted))
        CLIPS.labels("rejected").inc(len(records) - len(accepted))
        return outcome

    # runs -------------------------------------------------------------------------------------------
    def new_run(self, video_ids: list[str], config: CurationConfig, trigger: str = "api",
                run_id: str | None = None) -> CurationRun:
        if not video_ids:
            raise CurateError(422, "no_videos", "give at least one video id")
        if len(video_ids) > self.settings.max_videos_per_run:
            raise CurateError(422, "too_many_videos", f"a run takes at most {self.settings.max_videos_per_run} videos")
        missing = [v for v in video_ids if not is_safe_id(v) or not self.store.exists(raw_meta_key(v))]
        if missing:
            raise CurateError(404, "unknown_video", f"not ingested: {missing[:10]}")
        run = CurationRun(run_id=run_id or uuid.uuid4().hex, trigger=trigger, config_hash=self.config_hash(config),
                          config=config.model_dump(mode="json"), pipeline=self.pipeline(config).describe(),
                          videos=[VideoOutcome(video_id=v) for v in dict.fromkeys(video_ids)])
        RunTracker(self.store, run).save()
        return run

    def submit(self, run: CurationRun, config: CurationConfig) -> None:
        self._executor.submit(self.execute, run, config)

    def execute(self, run: CurationRun, config: CurationConfig) -> CurationRun:
        tracker = RunTracker(self.store, run)
        run.state = "running"
        tracker.save()
        start = time.perf_counter()

        def one(i: int) -> None:
            video = run.videos[i]
            try:
                self.curate_video(video.video_id, config, tracker, i)
            except (VideoRejected, CurateError) as exc:  # the input is bad: record why, move on
                video.state, video.permanent = "failed", True
                video.error = without_paths(exc.reason if isinstance(exc, VideoRejected) else exc.message)
                VIDEOS.labels("rejected").inc()
            except Exception as exc:  # one bad video must not stop the run
                log.exception("curation failed", extra={"video_id": video.video_id, "run_id": run.run_id})
                video.state, video.error = "failed", without_paths(f"{exc.__class__.__name__}: {exc}")
                VIDEOS.labels("failed").inc()
            tracker.progress(i, 1, 1)

        # decoding, scaling and encoding release the GIL but are partly single-threaded (swscale,
        # small x264 encodes), so two videos at once keep both cores busy
        with ThreadPoolExecutor(max_workers=max(1, self.settings.parallel_videos)) as pool:
            list(pool.map(one, range(len(run.videos))))
        run.clips_total = sum(v.clips_total for v in run.videos)
        run.clips_accepted = sum(v.clips_accepted for v in run.videos)
        rows = run._rows
        if rows:
            key = run_summary_key(run.run_id)
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows), buf)
            self.store.put_bytes(key, buf.getvalue(), "application/vnd.apache.parquet")
            run.summary_uri = self.store.uri(key)
        failed = [v for v in run.videos if v.state == "failed"]
        run.state = "failed" if failed and len(failed) == len(run.videos) else "succeeded"
        run.error = "; ".join(f"{v.video_id[:12]}: {v.error}" for v in failed) or None
        run.percent_done = 100.0
        run.wall_seconds = round(time.perf_counter() - start, 3)
        run.finished_at = datetime.now(timezone.utc)
        tracker.save()
        return run

    def get_run(self, run_id: str) -> CurationRun:
        run = load_run(self.store, run_id) if is_safe_id(run_id) else None
        if run is None:
            raise CurateError(404, "not_found", f"no curation run {run_id!r}")
        return run

    def get_clip(self, clip_id: str) -> ClipRecord:
        try:
            return read_clip(self.store, clip_id)
        except ObjectNotFound:
            raise CurateError(404, "not_found", f"no clip {clip_id!r}") from None

    def config_for_source(self, source: str) -> CurationConfig:
        """The config event-triggered curation uses for a video from ``source`` (settings.source_profiles)."""
        return config_with(self.settings.source_profiles.get(source))

    # events -----------------------------------------------------------------------------------------
    def handle_event(self, env: events.Envelope) -> None:
        """videos.ingested -> curate with the default config; idempotent through the marker object."""
        if env.WhichOneof("payload") != "video_ingested":
            raise PermanentError(f"curate does not handle {env.type}")
        video_id = env.video_ingested.video_id
        config = self.config_for_source(env.video_ingested.source)
        run_id = f"ev-{video_id[:24]}-{self.config_hash(config)}"
        try:
            run = self.new_run([video_id], config, trigger="event", run_id=run_id)
        except CurateError as exc:
            raise PermanentError(exc.message) from None
        done = self.execute(run, config)
        video = done.videos[0]
        if video.state == "failed":
            if video.permanent:
                raise PermanentError(video.error or "unreadable video")  # retrying cannot help
            raise RuntimeError(video.error)  # transient (store, index): retried, then dead-lettered

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
        if self.captioner is not None:
            self.captioner.close()


def _summary_rows(records: list[ClipRecord]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        rows.append({
            "clip_id": r.clip_id, "video_id": r.video_id, "source": r.source, "status": r.status,
            "start_s": r.start_s, "end_s": r.end_s, "duration_s": r.duration_s, "caption": r.caption,
            "tags": r.tags, "rejected_by": [x.filter for x in r.rejections],
            "reasons": [x.reason for x in r.rejections], "duplicate_of": r.duplicate_of, "shard": r.shard,
            **{name: r.scores.get(score) for name, score in SCORE_SCALARS.items()}, "config_hash": r.config_hash,
        })
    return rows
