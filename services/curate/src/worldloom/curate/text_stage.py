"""embed_text: caption text embeddings (MiniLM) — lives here because it needs the model library."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from worldloom.models.text_embedder import TextEmbedder
from worldloom.video.pipeline import Resources, Stage, VideoTask


@dataclass
class TextEmbedStage(Stage):
    """One batch per video; the model is loaded once, in setup, not per task."""

    name: ClassVar[str] = "embed_text"
    inputs = ("clips", "clip.caption")
    outputs = ("clip.text_embedding",)
    resources = Resources(cpus=1.0, memory_mb=512)

    embedder_factory: Callable[[], TextEmbedder]
    embedder: TextEmbedder | None = field(default=None, init=False, repr=False)

    def setup(self) -> None:
        self.embedder = self.embedder_factory()

    def process(self, task: VideoTask) -> None:
        clips = [c for c in task.clips if c.caption]
        if not clips:
            return
        assert self.embedder is not None
        for clip, vec in zip(clips, self.embedder.encode([c.caption for c in clips]), strict=True):
            clip.text_embedding = vec
