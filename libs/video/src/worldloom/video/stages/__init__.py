"""The curation stages, one module each, in pipeline order: split -> transcode -> filter -> annotate ->
embed_visual -> dedup. The curate service adds embed_text and write (they need the model library and the
stores) and assembles the pipeline.

Each stage is a dataclass (its fields are its config) that works on a whole VideoTask, so per-video work
(one decode, one batch of embeddings) is shared by the clips of that video. A clip that cannot be
processed is rejected with a reason; the rest of the video carries on.
"""

from worldloom.video.stages.annotate import CAPTION_ATTRIBUTES, AnnotateStage, VlmFn
from worldloom.video.stages.dedup import DedupStage, Neighbours
from worldloom.video.stages.embed_visual import VisualEmbedStage
from worldloom.video.stages.filter import FilterStage
from worldloom.video.stages.split import SplitStage, clip_id_for
from worldloom.video.stages.transcode import TranscodeStage

__all__ = [
    "CAPTION_ATTRIBUTES", "AnnotateStage", "DedupStage", "FilterStage", "Neighbours", "SplitStage", "TranscodeStage",
    "VisualEmbedStage", "VlmFn", "clip_id_for",
]
