"""Robot episode folders (video + per-step actions + instructions): `worldloom ingest --episodes DIR` sends them
through the ingest API; `worldloom model eval DIR` and `worldloom predict --context DIR` score and drive world
models with their actions (worldloom.cli.world_cmd).

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
from typing import Any

from worldloom.cli.ingest_cmd import UploadOutcome


@dataclass
class EpisodeUpload:
    video: Path
    attributes: dict[str, str]
    arrays: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # part -> (file name, content)


@dataclass
class RobotEpisode:
    """One episode of the folder as read (the actions unparsed: ingest checks them, eval converts them)."""

    video: Path
    split: str
    episode: str
    texts: list[str]
    actions: list[Any]  # the annotation's rows: actions[i] leads from frame i to frame i + 1
    state: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.split}/{self.episode}"


def read_episodes(root: Path, split: str | None = None) -> tuple[list[RobotEpisode], list[UploadOutcome]]:
    """The episodes under ``root`` (sorted by split, then id; only ``split``'s when given) and the ones that
    cannot be used (a missing video or actions, an annotation that is not JSON or leads outside ``root``),
    each with its reason. The one reader of this layout: ``ingest --episodes``, ``model eval`` and
    ``predict`` use it."""
    episodes: list[RobotEpisode] = []
    refused: list[UploadOutcome] = []
    base = root.resolve()
    for ann in sorted((root / "annotation").glob(f"{split or '*'}/*.json")):
        split_name, stem = ann.parent.name, ann.stem
        try:
            meta = json.loads(ann.read_text())
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            refused.append(UploadOutcome(ann, None, "rejected", f"annotation unreadable: {exc}"))
            continue
        video = _video_path(root, meta, split_name, stem)
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
        texts = list(dict.fromkeys(str(t).strip() for t in meta.get("texts") or [] if str(t).strip()))
        state = video.parent / "state.npy"
        episodes.append(RobotEpisode(video, split_name, str(meta.get("episode_id") or stem), texts, actions,
                                     state if state.is_file() else None))
    return episodes, refused


def load_episodes(root: Path, extra: dict[str, str] | None = None) -> tuple[list[EpisodeUpload], list[UploadOutcome]]:
    """The folder's episodes as uploads (video + actions as JSON + states as .npy) and the refused ones."""
    episodes, refused = read_episodes(root)
    uploads = []
    for ep in episodes:
        attrs = {"dataset": root.resolve().name, "split": ep.split, "episode": ep.episode}
        if ep.texts:
            attrs["instruction"] = "; ".join(ep.texts)
        attrs.update(extra or {})
        arrays = {"actions": ("actions.json", json.dumps(ep.actions).encode())}
        if ep.state is not None:
            arrays["states"] = ("state.npy", ep.state.read_bytes())
        uploads.append(EpisodeUpload(ep.video, attrs, arrays))
    return uploads, refused


def _video_path(root: Path, meta: dict, split: str, stem: str) -> Path:
    videos = meta.get("videos")
    if isinstance(videos, list) and videos and isinstance(videos[0], dict) and videos[0].get("video_path"):
        return root / str(videos[0]["video_path"])
    return root / "videos" / split / stem / "rgb.mp4"
