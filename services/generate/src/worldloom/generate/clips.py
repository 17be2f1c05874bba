"""Context frames from a curated clip: its training rendition (``clips/<clip_id>/meta.json``)."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from worldloom.core.catalog import TRAIN_RENDITION, read_clip
from worldloom.core.ids import is_safe_id
from worldloom.core.store.base import InvalidKey, ObjectNotFound, ObjectStore
from worldloom.generate.service import BadInput

class ClipNotFound(LookupError):
    pass


def load_clip_frames(store: ObjectStore, clip_id: str, start_frame: int, count: int) -> np.ndarray:
    """Frames ``start_frame .. start_frame + count - 1`` of the clip's train rendition, uint8 ``[T, H, W, 3]``
    (fewer when the clip ends sooner). Raises :class:`ClipNotFound` or :class:`BadInput`."""
    from worldloom.video.decode import read_frames
    from worldloom.video.errors import VideoRejected

    if not is_safe_id(clip_id or ""):
        raise BadInput(f"clip_id {clip_id!r} is not a valid clip id")
    if start_frame < 0:
        raise BadInput(f"clip_start_frame must be >= 0, got {start_frame}")
    try:
        record = read_clip(store, clip_id)
    except (ObjectNotFound, InvalidKey):
        raise ClipNotFound(f"no clip {clip_id!r}") from None
    except ValueError:
        raise ClipNotFound(f"clip {clip_id!r} has an unreadable record") from None
    ref = record.renditions.get(TRAIN_RENDITION)
    if not ref:
        raise BadInput(f"clip {clip_id} has no {TRAIN_RENDITION} rendition")
    key = store.key_from_uri(ref) if "://" in ref else ref
    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="wl-gen-clip-")
    os.close(fd)
    try:
        try:
            store.download(key, path)
        except (ObjectNotFound, InvalidKey):
            raise ClipNotFound(f"clip {clip_id}: rendition {key} is missing from the store") from None
        try:
            frames, _ = read_frames(path, start_frame=start_frame, end_frame=start_frame + count)
        except VideoRejected as exc:
            raise BadInput(f"clip {clip_id}: rendition cannot be decoded ({exc.reason})") from None
    finally:
        os.unlink(path)
    if frames.shape[0] == 0:
        raise BadInput(f"clip {clip_id} has no frames from {start_frame} on")
    return frames
