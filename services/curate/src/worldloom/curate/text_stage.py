"""Caption text embeddings (MiniLM) — lives here because it needs the model library."""

from __future__ import annotations

from typing import ClassVar

from worldloom.models.text_embedder import TextEmbedder
from worldloom.video.pipeline import Resources, Stage, VideoTask


class TextEmbedStage(Stage):
    name: ClassVar[str] = "embed_text"
    inputs = ("clips", "clip.caption")
    outputs = ("clip.text_embedding",)
    resources = Resources(cpus=1.0, memory_mb=512)

    def __init__(self, embedder_factory) -> None:  # noqa: ANN001 (callable returning a TextEmbedder)
        self.embedder_factory = embedder_factory
        self.embedder: TextEmbedder | None = None

    def setup(self) -> None:
        self.embedder = self.embedder_factory()

    def process(self, task: VideoTask) -> None:
        clips = [c for c in task.clips if c.accepted and c.caption]
        if not clips:
            return
        assert self.embedder is not None
        for clip, vec in zip(clips, self.embedder.encode([c.caption for c in clips]), strict=True):
            clip.text_embedding = vec
