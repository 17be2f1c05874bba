"""`worldloom ingest --episodes DIR`: robot episodes (video + per-step actions + instructions) through the ingest API.

The folder is laid out like a BridgeData V2 / Cosmos example folder::

    annotation/<split>/<id>.json    {"texts": [instruction, ...], "action": [[...], ...], "videos": [{"video_path"}]}
    videos/<split>/<id>/rgb.mp4     the episode's video (T frames; T - 1 or T actions)
    videos/<split>/<id>/state.npy   optional per-frame robot state

Each episode is one upload: the video, its actions (the annotation's JSON list, as JSON) and states
(state.npy, as .npy) as array parts, and attributes ``dataset`` (the folder's name), ``split``,
``episode`` and ``instruction`` (the texts, which curation turns into the clips' captions, so search
finds them). Ingest is content-addressed, so importing the folder again stores nothing new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from worldloom.cli.ingest_cmd import UploadOutcome


@dataclass
class EpisodeUpload:
    video: Path
    attributes: dict[str, str]
    arrays: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # part -> (file name, content)


def load_episodes(root: Path, extra: dict[str, str] | None = None) -> tuple[list[EpisodeUpload], list[UploadOutcome]]:
    """The episodes under ``root`` (sorted by split, then id) and the ones that cannot be sent (a missing
    video or actions, an annotation that is not JSON or leads outside ``root``), each with its reason."""
    uploads: list[EpisodeUpload] = []
    refused: list[UploadOutcome] = []
    base = root.resolve()
    for ann in sorted((root / "annotation").glob("*/*.json")):
        split, stem = ann.parent.name, ann.stem
        try:
            meta = json.loads(ann.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            refused.append(UploadOutcome(ann, None, "rejected", f"annotation unreadable: {exc}"))
            continue
        video = _video_path(root, meta, split, stem)
        if not video.resolve().is_relative_to(base):
            refused.append(UploadOutcome(ann, None, "rejected", f"video path {video} leads outside {root}"))
            continue
        if not video.is_file():
            refused.append(UploadOutcome(video, None, "rejected", f"no video for annotation {ann.name}"))
            continue
        actions = meta.get("action")
        if not isinstance(actions, list) or not actions:
            refused.append(UploadOutcome(video, None, "rejected", f"{ann.name} has no 'action' list"))
            continue
        texts = [str(t).strip() for t in meta.get("texts") or [] if str(t).strip()]
        attrs = {"dataset": root.resolve().name, "split": split, "episode": str(meta.get("episode_id") or stem)}
        if texts:
            attrs["instruction"] = "; ".join(dict.fromkeys(texts))
        attrs.update(extra or {})
        arrays = {"actions": ("actions.json", json.dumps(actions).encode())}
        state = video.parent / "state.npy"
        if state.is_file():
            arrays["states"] = ("state.npy", state.read_bytes())
        uploads.append(EpisodeUpload(video, attrs, arrays))
    return uploads, refused


def _video_path(root: Path, meta: dict, split: str, stem: str) -> Path:
    videos = meta.get("videos")
    if isinstance(videos, list) and videos and isinstance(videos[0], dict) and videos[0].get("video_path"):
        return root / str(videos[0]["video_path"])
    return root / "videos" / split / stem / "rgb.mp4"
