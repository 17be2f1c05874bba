"""The ingest core without HTTP: validate, probe, store under raw/, emit videos.ingested, exactly once.

Shared by every service that stores videos (the ingest service's uploads and simulator source, rlsim's
real episodes), so there is one implementation of the write order, the dedupe and the event. It lives
beside the probe it needs (worldloom.video.probe); libs/core cannot hold it (video depends on core).

Write order makes every failure safe to retry: the video bytes first, then the sidecar (status
"stored"), then the event, then the sidecar again (status "ingested"). A video without a sidecar is
invisible; a sidecar still "stored" (the bus was down) is re-emitted by the next upload of the same
bytes. The id is the content's SHA-256, so a repeated upload finds the sidecar and emits nothing, and a
claim per video in the store (worldloom.core.claims) makes two replicas given the same bytes at once
store and emit once: the second waits for the first and answers "duplicate".

An episode's per-step arrays (worldloom.core.episodes: a simulator's, or an upload's) are checked against
the probed frame count before anything is written, then stored before the video (actions.safetensors +
actions.json under raw/<id>/), so the record that makes the video visible always finds them. The same
video again with other arrays (or arrays where it was stored without) is a 409: a video's episode never
changes under the clips, tokens and models already made from it.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from worldloom.core import events
from worldloom.core.bus import Bus
from worldloom.core.catalog import (
    ATTRIBUTE_LIMITS,
    RAW_PREFIX,
    VideoRecord,
    VideoStatus,
    actions_key,
    actions_meta_key,
    raw_claim_key,
    raw_meta_key,
    raw_video_key,
)
from worldloom.core.claims import ClaimBusy, Claims
from worldloom.core.episodes import Episode, EpisodeLimits
from worldloom.core.errors import Refusal
from worldloom.core.ids import is_sha256_hex, sha256_file
from worldloom.core.scratch import scratch_prefix
from worldloom.core.store import InvalidKey, ObjectNotFound, ObjectStore
from worldloom.video.errors import VideoRejected
from worldloom.video.limits import VideoLimits
from worldloom.video.probe import VideoInfo, probe

log = logging.getLogger("worldloom.ingest")

PRODUCER = "ingest"
VIDEOS = Counter("worldloom_ingest_videos_total", "Videos seen by ingest", ["outcome"])
BYTES = Counter("worldloom_ingest_bytes_total", "Bytes of newly stored videos")

_EXT_BY_CONTAINER = {"mov": "mp4", "mp4": "mp4", "matroska": "mkv", "webm": "webm", "avi": "avi",
                     "mpegts": "ts", "flv": "flv", "gif": "gif", "ogg": "ogv", "mpeg": "mpg"}
_CONTENT_TYPES = {"mp4": "video/mp4", "mkv": "video/x-matroska", "webm": "video/webm",
                  "avi": "video/x-msvideo", "ts": "video/mp2t", "flv": "video/x-flv", "gif": "image/gif",
                  "ogv": "video/ogg", "mpg": "video/mpeg"}
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


class LimitSettings(BaseModel):
    """Decoding limits for untrusted videos; exceeding one is a 4xx with the limit named."""

    model_config = ConfigDict(extra="forbid")
    max_width: int = Field(7680, ge=16)
    max_height: int = Field(4320, ge=16)
    min_side: int = Field(16, ge=1)
    max_aspect_ratio: float = Field(8.0, ge=1)
    max_duration_s: float = Field(2 * 3600, gt=0)
    max_fps: float = Field(240, gt=0)


class EpisodeSettings(BaseModel):
    """Bounds on the per-step arrays an upload carries beside its video (worldloom.core.episodes)."""

    model_config = ConfigDict(extra="forbid")
    max_action_dims: int = Field(64, ge=1, description="values per action row")
    max_state_dims: int = Field(256, ge=1, description="values per state row")
    max_array_bytes: int = Field(64 * 1024**2, ge=1024, description="one array part, and all arrays together")
    max_json_bytes: int = Field(4 * 1024**2, ge=1024, description="an array sent as JSON text")


class IngestResult(BaseModel):
    video: VideoRecord
    duplicate: bool = Field(description="true when this content was already ingested (no new event)")


class VideoPage(BaseModel):
    items: list[VideoRecord]
    next_page_token: str | None = None


class IngestError(Refusal):
    """A rejected request: `status` is the HTTP status the API answers with, `code` a stable name."""


def validate_filename(name: str | None) -> str:
    """Names are informational only, but a hostile one must be refused, not quietly rewritten."""
    if not name:
        return "video"
    if len(name) > 255:
        raise IngestError(400, "invalid_filename", "file name is longer than 255 characters")
    if _BAD_NAME.search(name) or name in (".", "..") or name.startswith(".."):
        raise IngestError(
            400, "invalid_filename",
            f"file name {name!r} contains a path separator, '..' or control characters; send a plain name",
        )
    return name


#: attributes ingest sets itself when a video comes with an episode's arrays (where they are)
EPISODE_ATTRIBUTES = ("actions_uri", "actions_meta_uri")


def check_attributes(attributes: dict[str, str], *, caller: bool = True) -> None:
    """Attributes every downstream field can store (ATTRIBUTE_LIMITS, from the clip collections' fields);
    a caller cannot set the ones that point at stored arrays."""
    if caller and (taken := [k for k in EPISODE_ATTRIBUTES if k in attributes]):
        raise IngestError(400, "invalid_attributes", f"attribute {taken[0]!r} is set by ingest (where the video's "
                          "arrays are stored); send the arrays themselves (README: episodes with actions)")
    if problem := ATTRIBUTE_LIMITS.problem(attributes):
        raise IngestError(400, "invalid_attributes", f"'attributes' cannot be stored: {problem}")


class IngestService:
    def __init__(self, store: ObjectStore, bus: Bus, limits: VideoLimits, claims: Claims | None = None,
                 claim_wait_s: float = 300.0, episode_limits: EpisodeLimits | None = None) -> None:
        self.store = store
        self.bus = bus
        self.limits = limits
        self.episode_limits = episode_limits or EpisodeLimits()
        self.claims = claims or Claims(store, lease_s=120.0)
        self.claim_wait_s = claim_wait_s

    # reads ---------------------------------------------------------------------------------------
    def get(self, video_id: str) -> VideoRecord:
        if not is_sha256_hex(video_id):
            raise IngestError(404, "not_found", f"no video {video_id!r}: ids are 64 lowercase hex characters")
        try:
            return self.store.get_record(raw_meta_key(video_id), VideoRecord)
        except ObjectNotFound:
            raise IngestError(404, "not_found", f"no video {video_id}") from None

    def iter_records(self, status: VideoStatus | None = None, after: str | None = None) -> Iterator[VideoRecord]:
        for obj in self.store.list(RAW_PREFIX):
            video_id = obj.key.split("/")[1]
            if obj.key != raw_meta_key(video_id) or (after and video_id <= after):
                continue
            try:
                record = self.store.get_record(obj.key, VideoRecord)
            except ObjectNotFound:
                continue  # deleted while listing
            if status is None or record.status == status:
                yield record

    def page(self, status: VideoStatus | None, limit: int, after: str | None) -> VideoPage:
        """Up to `limit` records after the video id `after`; the token is the last id when more follow."""
        items: list[VideoRecord] = []
        for record in self.iter_records(status, after=after):
            if len(items) == limit:
                return VideoPage(items=items, next_page_token=items[-1].video_id)
            items.append(record)
        return VideoPage(items=items)

    # writes --------------------------------------------------------------------------------------
    def ingest_file(
        self,
        path: Path,
        filename: str | None,
        source: str = "upload",
        attributes: dict[str, str] | None = None,
        digest: tuple[str, int] | None = None,
        episode: Episode | None = None,
    ) -> IngestResult:
        """Ingests a local file; `digest` is (sha256, size) when the caller hashed it while receiving;
        `episode` the per-step arrays stored with it (checked against its frame count)."""
        filename = validate_filename(filename)
        attributes = dict(attributes or {})
        check_attributes(attributes)
        if digest is None:
            with open(path, "rb") as f:
                digest = sha256_file(f)
        video_id, size = digest
        if episode is not None:
            attributes.update(actions_uri=self.store.uri(actions_key(video_id)),
                              actions_meta_uri=self.store.uri(actions_meta_key(video_id)))
            check_attributes(attributes, caller=False)

        def ingest() -> IngestResult:
            existing = self._record(video_id)
            if existing is None:
                info = self._probe(path)
                if episode is not None:
                    self._check_episode(episode, info.frame_count)
                existing = self._store(path, video_id, size, info, filename, source, attributes, episode)
            elif episode is not None:
                self._same_episode(existing, episode)
            return IngestResult(video=self._emit(existing), duplicate=False)

        try:  # one claim per video across replicas: the same bytes uploaded twice at once store and emit once
            result = self.claims.run_once(raw_claim_key(video_id), lambda: self._ingested(video_id) is not None, ingest,
                                          wait_s=self.claim_wait_s, renew_every_s=self.claims.lease_s / 4)
        except ClaimBusy:
            raise IngestError(409, "ingest_in_progress", f"video {video_id} is being ingested by another "
                              "request for longer than this one waits; retry later (nothing is duplicated)") from None
        if result is not None:
            return result
        done = self._ingested(video_id)
        assert done is not None  # run_once returns None only once the video is ingested
        if episode is not None:
            self._same_episode(done, episode)
        VIDEOS.labels("duplicate").inc()
        return IngestResult(video=done, duplicate=True)

    def _record(self, video_id: str) -> VideoRecord | None:
        try:
            return self.get(video_id)
        except IngestError:
            return None

    def _ingested(self, video_id: str) -> VideoRecord | None:
        """The video's record once it is announced (status "ingested")."""
        record = self._record(video_id)
        return record if record is not None and record.status == "ingested" else None

    def _probe(self, path: Path) -> VideoInfo:
        """The video's facts, or the refusal: probe's rejections, and still images (not one-frame videos)."""
        try:
            info = probe(path, self.limits)
        except VideoRejected as exc:
            VIDEOS.labels(f"rejected_{exc.code}").inc()
            status = 413 if exc.code == "too_large" else 422
            raise IngestError(status, exc.code, exc.reason) from None
        if info.still_image:
            VIDEOS.labels("rejected_still_image").inc()
            raise IngestError(
                422, "still_image",
                f"the file is a still image ({info.container}, {info.frame_count} frame), not a video: "
                "ingest takes videos only (a world model learns from motion; one picture is no clip)",
            )
        return info

    def _check_episode(self, episode: Episode, frames: int) -> None:
        try:
            episode.check_frames(frames)
        except Refusal as exc:
            VIDEOS.labels(f"rejected_{exc.code}").inc()
            raise IngestError(exc.status, exc.code, exc.message) from None

    def _same_episode(self, record: VideoRecord, episode: Episode) -> None:
        """A video stored before comes again with arrays: they must be the ones stored with it."""
        self._check_episode(episode, int(record.info["frame_count"]))
        try:
            stored = self.store.get_bytes(actions_key(record.video_id))
        except ObjectNotFound:
            stored = None
        if stored != episode.encode():
            VIDEOS.labels("rejected_episode_conflict").inc()
            what = "without arrays" if stored is None else "with other arrays"
            raise IngestError(409, "episode_conflict", f"video {record.video_id} was ingested {what}; a video's "
                              "episode does not change once stored (nothing was written)")

    def _store(
        self, path: Path, video_id: str, size: int, info: VideoInfo, filename: str, source: str,
        attributes: dict[str, str], episode: Episode | None = None,
    ) -> VideoRecord:
        ext = _EXT_BY_CONTAINER.get(info.container.split(",")[0], "bin")
        content_type = _CONTENT_TYPES.get(ext, "application/octet-stream")
        video_key, meta_key = raw_video_key(video_id, ext), raw_meta_key(video_id)
        written: list[str] = []
        try:  # outputs first (arrays, then the video), the sidecar that makes them visible last
            if episode is not None:
                for key, data, ctype in (
                        (actions_key(video_id), episode.encode(), "application/octet-stream"),
                        (actions_meta_key(video_id), episode.description_bytes(info.frame_count, info.fps),
                         "application/json")):
                    written.append(key)
                    self.store.put_bytes(key, data, ctype)
            written.append(video_key)
            with open(path, "rb") as f:
                self.store.put_file(video_key, f, size, content_type)
        except Exception:
            self._delete(written)
            raise
        record = VideoRecord(
            video_id=video_id, uri=self.store.uri(video_key), metadata_uri=self.store.uri(meta_key),
            filename=filename, source=source, size_bytes=size, content_type=content_type,
            info=info.to_dict(), attributes=attributes, status="stored",
            created_at=datetime.now(timezone.utc),
        )
        try:
            self._write_record(record)
        except Exception:
            self._delete(written)  # no sidecar -> no video: never leave half an ingest behind
            raise
        BYTES.inc(size)
        return record

    def _emit(self, record: VideoRecord) -> VideoRecord:
        payload = events.VideoIngested(
            video_id=record.video_id, uri=record.uri, metadata_uri=record.metadata_uri,
            size_bytes=record.size_bytes, filename=record.filename, source=record.source,
            info=_info_proto(record.info), attributes=record.attributes,
        )
        # the id is the effect's: a re-emit (the retry after a 503, a second replica) is the same event
        event = events.new_event(PRODUCER, payload, lineage=[record.video_id],
                                 event_id=events.effect_id(events.TOPIC_VIDEOS_INGESTED, record.video_id))
        try:
            self.bus.publish(events.TOPIC_VIDEOS_INGESTED, event, key=record.video_id, wait=True)
        except Exception as exc:
            log.error("could not emit videos.ingested", extra={"video_id": record.video_id, "error": str(exc)})
            raise IngestError(
                503, "bus_unavailable",
                "the video is stored, but the event bus did not acknowledge videos.ingested in time: the event "
                "may still be delivered. Upload the same file again to make sure; a retry sends the same event "
                f"(id {event.event_id}), which consumers treat as one",
            ) from None
        done = record.model_copy(
            update={"status": "ingested", "event_id": event.event_id, "ingested_at": datetime.now(timezone.utc)}
        )
        self._write_record(done)
        VIDEOS.labels("ingested").inc()
        log.info("ingested video", extra={"video_id": record.video_id, "event_id": event.event_id})
        return done

    def resume(self) -> int:
        """Announces every video left "stored" (its videos.ingested was not acknowledged and nobody uploaded
        it again); run at start-up. A video being ingested right now holds its claim and is skipped."""
        announced = 0
        for record in self.iter_records("stored"):
            vid = record.video_id

            def emit(vid: str = vid) -> VideoRecord | None:
                current = self._record(vid)  # as it is now, under the claim
                return self._emit(current) if current is not None else None

            def done(vid: str = vid) -> bool:
                return self._ingested(vid) is not None

            try:
                if self.claims.run_once(raw_claim_key(vid), done, emit, wait_s=0) is not None:
                    announced += 1
            except (ClaimBusy, IngestError) as exc:  # in flight elsewhere, or the bus is still down
                log.warning("could not resume %s: %s", vid, exc)
        return announced

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.store.delete(key)
            except Exception as exc:  # the first error is the one to report; this leftover is invisible
                log.warning("could not remove %s after a failed ingest: %s", key, exc)

    def _write_record(self, record: VideoRecord) -> None:
        self.store.put_record(raw_meta_key(record.video_id), record)

    def import_uri(self, uri: str, filename: str | None, attributes: dict[str, str]) -> IngestResult:
        """Ingests an object already in the configured store (no re-upload through HTTP)."""
        check_attributes(attributes)
        try:
            key = self.store.key_from_uri(uri)
        except InvalidKey as exc:
            raise IngestError(400, "invalid_uri", str(exc)) from None
        try:
            size = self.store.stat(key).size
        except ObjectNotFound:
            raise IngestError(404, "not_found", f"no object at {uri}") from None
        if size > self.limits.max_bytes:
            raise IngestError(413, "too_large", f"{uri} is {size} bytes; the limit is {self.limits.max_bytes}")
        with self.store.open(key) as src, tempfile.NamedTemporaryFile(prefix=scratch_prefix("import")) as tmp:
            shutil.copyfileobj(src, tmp, 1 << 20)
            tmp.flush()
            return self.ingest_file(Path(tmp.name), filename or key.rsplit("/", 1)[-1], "import", attributes)


def _info_proto(info: dict) -> events.VideoInfo:
    fields = {f.name for f in events.VideoInfo.DESCRIPTOR.fields}
    return events.VideoInfo(**{k: v for k, v in info.items() if k in fields and v is not None})
