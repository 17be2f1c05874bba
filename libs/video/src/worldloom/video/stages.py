"""Curation stages (split -> transcode -> filter -> annotate -> embed -> dedup); curate assembles them.

Each stage is small, declares what it reads and writes, and works on a whole VideoTask so that
per-video work (one decode, one batch of embeddings) is shared by the clips of that video.
A clip that cannot be processed is rejected with a reason; the rest of the video carries on.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

import httpx
import numpy as np

from worldloom.video import descriptors, filters, phash, transcode, visual_embed
from worldloom.video.analysis import analysis_frames
from worldloom.video.errors import VideoRejected
from worldloom.video.pipeline import ClipTask, Resources, Stage, VideoTask
from worldloom.video.split import SplitConfig, split_video

log = logging.getLogger("worldloom.stages")


def clip_id_for(video_id: str, start_frame: int, end_frame: int, config_hash: str) -> str:
    """Deterministic: the same video, span and config always give the same clip id (idempotency)."""
    return hashlib.sha256(f"{video_id}:{start_frame}:{end_frame}:{config_hash}".encode()).hexdigest()[:32]


class SplitStage(Stage):
    name: ClassVar[str] = "split"
    inputs = ("path", "info")
    outputs = ("spans", "clips", "errors")
    resources = Resources(cpus=1.0, memory_mb=512)

    def __init__(self, config: SplitConfig, config_hash: str) -> None:
        self.config = config
        self.config_hash = config_hash

    def process(self, task: VideoTask) -> None:
        shots = split_video(task.path, self.config)
        if shots.error:
            task.errors.append(f"decoding stopped after frame {shots.decoded_frames}: {shots.error}")
        task.spans = list(shots)
        task.clips = [ClipTask(clip_id_for(task.video_id, s.start_frame, s.end_frame, self.config_hash), s)
                      for s in shots]


class TranscodeStage(Stage):
    """One decode per clip writes the preview and training renditions; analysis frames come from the
    small preview (already upright), which costs far less than decoding the source again."""

    name: ClassVar[str] = "transcode"
    inputs = ("path", "clips")
    outputs = ("clip.renditions", "clip.frames", "clip.frame_fps", "outputs")
    resources = Resources(cpus=1.0, memory_mb=768)

    def __init__(self, preview_short_side: int = 256, train_size: int = 64, train_fps: float | None = None,
                 crf: int = 23) -> None:
        self.preview_short_side = preview_short_side
        self.train_size = train_size
        self.train_fps = train_fps
        self.crf = crf

    def process(self, task: VideoTask) -> None:
        sizes = task.outputs.setdefault("rendition_info", {})
        clips = [c for c in task.clips if c.accepted]
        jobs = []
        for clip in clips:
            folder = task.workdir / clip.clip_id
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append(transcode.ClipJob(clip.span.start_frame, clip.span.end_frame, [
                transcode.RenditionSpec(folder / "preview.mp4", short_side=self.preview_short_side, crf=self.crf),
                transcode.RenditionSpec(folder / "train.mp4", square=self.train_size, fps=self.train_fps, crf=self.crf),
            ]))
        try:
            results = transcode.transcode_clips(task.path, jobs)
        except (OSError, ValueError) as exc:  # cannot even open the file any more
            results = [exc] * len(jobs)
        except Exception as exc:  # PyAV errors opening a damaged file
            results = [exc] * len(jobs)
        for clip, result in zip(clips, results, strict=True):
            if isinstance(result, Exception):
                clip.reject("unreadable", f"the clip could not be decoded/encoded: {result.__class__.__name__}: {result}")
                continue
            preview, train = result
            try:
                frames = analysis_frames(preview.path, 0, preview.frame_count, source_fps=preview.fps, rotation=0)
            except VideoRejected as exc:
                clip.reject("unreadable", f"the clip's preview could not be read back: {exc.reason}")
                continue
            folder = preview.path.parent
            clip.frames, clip.frame_fps = frames.frames, frames.fps
            mid = frames.frames[len(frames.frames) // 2]
            thumb = transcode.write_thumbnail(mid, folder / "thumb.jpg", max_side=256)
            gif_frames = frames.frames[:: max(1, len(frames.frames) // 12)][:12]
            gif = transcode.write_gif(gif_frames, folder / "preview.gif", fps=min(8.0, frames.fps), max_side=160)
            clip.renditions = {"preview.mp4": preview.path, "train.mp4": train.path, "thumb.jpg": thumb,
                               "preview.gif": gif}
            sizes[clip.clip_id] = {"preview.mp4": _info(preview), "train.mp4": _info(train)}


def _info(f: transcode.ClipFile) -> dict[str, float]:
    return {"width": f.width, "height": f.height, "fps": round(f.fps, 4), "frames": f.frame_count,
            "duration_s": round(f.duration_s, 4)}


class FilterStage(Stage):
    name: ClassVar[str] = "filter"
    inputs = ("clips", "clip.frames", "clip.frame_fps")
    outputs = ("clip.scores", "clip.rejections")
    resources = Resources(cpus=0.5, memory_mb=256)

    def __init__(self, config: filters.FilterConfig) -> None:
        self.config = config

    def process(self, task: VideoTask) -> None:
        for clip in task.clips:
            if not clip.accepted or clip.frames is None:
                continue
            scores = filters.clip_scores(clip.frames, clip.frame_fps, clip.span.end_s - clip.span.start_s)
            clip.scores = {k: float(v) for k, v in asdict(scores).items()}
            for r in filters.evaluate(scores, self.config):
                clip.reject(r.filter, r.reason, float(r.value), float(r.threshold))


VlmFn = Callable[[bytes, str], str]


class OpenAIVisionCaptioner:
    """Captions a JPEG with any OpenAI-compatible chat API that accepts image_url content (vLLM, Ollama...)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0,
                 prompt: str = "Describe this video frame in one factual sentence for a dataset caption.") -> None:
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                   headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        self.model = model
        self.prompt = prompt

    def __call__(self, jpeg: bytes, hint: str) -> str:
        content = [
            {"type": "text", "text": self.prompt + (f" Context: {hint}" if hint else "")},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()}},
        ]
        resp = self.client.post("/chat/completions", json={
            "model": self.model, "max_tokens": 96, "temperature": 0.0,
            "messages": [{"role": "user", "content": content}],
        })
        resp.raise_for_status()
        text = resp.json()["choices"][0]["message"]["content"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the model returned an empty caption")
        return " ".join(text.split())[:1000]


def _plain(value: Any) -> Any:
    """numpy scalars/arrays to plain JSON types (records are stored as JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return round(value, 5)
    return value


CAPTION_ATTRIBUTES = ("caption", "instruction", "description", "title")


class AnnotateStage(Stage):
    """Caption + tags from (a) metadata that came with the video, (b) an optional VLM, (c) descriptors."""

    name: ClassVar[str] = "annotate"
    inputs = ("attributes", "clips", "clip.frames", "clip.frame_fps", "clip.renditions")
    outputs = ("clip.caption", "clip.caption_source", "clip.tags", "clip.descriptors")
    resources = Resources(cpus=0.5, memory_mb=256)

    def __init__(self, use_metadata: bool = True, captioner: VlmFn | None = None) -> None:
        self.use_metadata = use_metadata
        self.captioner = captioner

    def process(self, task: VideoTask) -> None:
        meta_text = ""
        if self.use_metadata:
            meta_text = next((task.attributes[k].strip() for k in CAPTION_ATTRIBUTES if task.attributes.get(k, "").strip()), "")
        for clip in task.clips:
            if not clip.accepted or clip.frames is None:
                continue
            desc = descriptors.describe(clip.frames, clip.frame_fps)
            clip.descriptors = {k: _plain(v) for k, v in asdict(desc).items()}
            tags = list(desc.tags())
            if ds := task.attributes.get("dataset"):
                tags.append(ds)
            parts, sources = [], []
            if meta_text:
                parts.append(meta_text.rstrip("."))
                sources.append("metadata")
            if self.captioner is not None and "thumb.jpg" in clip.renditions:
                try:
                    parts.append(self.captioner(clip.renditions["thumb.jpg"].read_bytes(), meta_text).rstrip("."))
                    sources.append("vlm")
                except Exception as exc:  # the VLM is optional: record why and fall back
                    clip.descriptors["vlm_error"] = f"{exc.__class__.__name__}: {exc}"[:300]
            parts.append(desc.caption().rstrip("."))
            sources.append("descriptors")
            clip.caption = ". ".join(p for p in parts if p) + "."
            clip.caption_source = "+".join(sources)
            clip.tags = sorted(set(tags))


class VisualEmbedStage(Stage):
    """A clip embedding (mean of frame embeddings) plus a few keyframe embeddings for image queries."""

    name: ClassVar[str] = "embed_visual"
    inputs = ("clips", "clip.frames")
    outputs = ("clip.visual_embedding", "clip.keyframe_embeddings", "clip.phash")
    resources = Resources(cpus=0.5, memory_mb=256)

    def __init__(self, keyframes: int = 16) -> None:
        self.keyframes = keyframes

    def process(self, task: VideoTask) -> None:
        for clip in task.clips:
            if clip.accepted and clip.frames is not None:
                per_frame = visual_embed.embed_frames(clip.frames).astype(np.float32)
                mean = per_frame.mean(axis=0)
                clip.visual_embedding = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
                picks = np.unique(np.linspace(0, len(per_frame) - 1, min(self.keyframes, len(per_frame))).round().astype(int))
                clip.keyframe_embeddings = per_frame[picks]
                clip.phash = phash.clip_phash(clip.frames)


Neighbours = Callable[[np.ndarray, str, int], list[tuple[str, float, list[int]]]]
"""(vector, exclude_video_id, k) -> [(clip_id, cosine, phash)] from clips already in the index."""


class DedupStage(Stage):
    """Exact duplicates by perceptual hash, near duplicates by embedding cosine; keeps the sharper clip."""

    name: ClassVar[str] = "dedup"
    inputs = ("clips", "clip.visual_embedding", "clip.phash", "clip.scores")
    outputs = ("clip.duplicate_of", "clip.rejections")
    resources = Resources(cpus=0.25, memory_mb=128)

    def __init__(self, max_phash_distance: float = 6.0, semantic_threshold: float = 0.985,
                 neighbours: Neighbours | None = None) -> None:
        self.max_phash_distance = max_phash_distance
        self.semantic_threshold = semantic_threshold
        self.neighbours = neighbours

    def process(self, task: VideoTask) -> None:
        candidates = [c for c in task.clips if c.accepted and c.visual_embedding is not None]
        candidates.sort(key=lambda c: (-c.scores.get("sharpness", 0.0), c.span.start_frame))  # sharpest first
        kept: list[ClipTask] = []
        for clip in candidates:
            dup = self._match_kept(clip, kept) or self._match_index(clip, task.video_id)
            if dup is None:
                kept.append(clip)
                continue
            other, kind, value, threshold = dup
            clip.duplicate_of = other
            clip.reject(kind, f"{'exact' if kind == 'duplicate_exact' else 'near'} duplicate of clip {other} "
                              f"({'phash distance' if kind == 'duplicate_exact' else 'cosine'} {value:.3f})",
                        value, threshold)

    def _match_kept(self, clip: ClipTask, kept: list[ClipTask]) -> tuple[str, str, float, float] | None:
        for other in kept:
            d = phash.clip_distance(clip.phash, other.phash)
            if d <= self.max_phash_distance:
                return other.clip_id, "duplicate_exact", d, self.max_phash_distance
            cos = float(np.dot(clip.visual_embedding, other.visual_embedding))
            if cos >= self.semantic_threshold:
                return other.clip_id, "duplicate_semantic", cos, self.semantic_threshold
        return None

    def _match_index(self, clip: ClipTask, video_id: str) -> tuple[str, str, float, float] | None:
        if self.neighbours is None:
            return None
        for other_id, cos, other_hash in self.neighbours(clip.visual_embedding, video_id, 5):
            if other_hash and phash.clip_distance(clip.phash, other_hash) <= self.max_phash_distance:
                return other_id, "duplicate_exact", phash.clip_distance(clip.phash, other_hash), self.max_phash_distance
            if cos >= self.semantic_threshold:
                return other_id, "duplicate_semantic", cos, self.semantic_threshold
        return None

