"""annotate: a caption and tags per clip from the video's metadata, an optional VLM and descriptors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from worldloom.video import descriptors
from worldloom.video.pipeline import Resources, Stage, VideoTask

VlmFn = Callable[[bytes, str], str]
"""(JPEG bytes, context hint) -> one-sentence caption; e.g. worldloom.video.vlm.OpenAIVisionCaptioner."""

#: the descriptor that records why the VLM gave no caption (the clip kept the fallback caption)
VLM_ERROR = "vlm_error"

#: video attributes that hold a human caption, first found wins (bridge: instruction, uploads: caption...)
CAPTION_ATTRIBUTES = ("caption", "instruction", "description", "title")


@dataclass
class AnnotateStage(Stage):
    """Caption + tags from (a) metadata that came with the video, (b) an optional VLM, (c) descriptors.
    The VLM is optional: when it fails, the clip keeps the other parts and records why."""

    name: ClassVar[str] = "annotate"
    inputs = ("attributes", "clips", "clip.frames", "clip.frame_fps", "clip.renditions")
    outputs = ("clip.caption", "clip.caption_source", "clip.tags", "clip.descriptors")
    resources = Resources(cpus=0.5, memory_mb=256)

    use_metadata: bool = True
    captioner: VlmFn | None = None

    def process(self, task: VideoTask) -> None:
        meta_text = ""
        if self.use_metadata:
            meta_text = next((task.attributes[k].strip() for k in CAPTION_ATTRIBUTES if task.attributes.get(k, "").strip()), "")
        for clip in task.clips:
            desc = descriptors.describe(clip.require_frames(), clip.frame_fps)
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
                    clip.descriptors[VLM_ERROR] = f"{exc.__class__.__name__}: {exc}"[:300]
            parts.append(desc.caption().rstrip("."))
            sources.append("descriptors")
            clip.caption = ". ".join(p for p in parts if p) + "."
            clip.caption_source = "+".join(sources)
            clip.tags = sorted(set(tags))


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
