"""Token shards: one webdataset sample per clip, written by the tokenize service, read by world-model training.

Shards live at ``worldloom.core.catalog.token_shard_key(tokenizer, clip)``. A shard is a plain tar whose member names share the clip id as ``__key__``:
``<clip_id>.tokens.npy`` (int32 ``[t, h, w]`` FSQ indices) or ``<clip_id>.latents.npy`` (float16
``[c, t, h, w]``), plus ``<clip_id>.json`` metadata. Arrays are ``.npy`` loaded with
``allow_pickle=False``: a shard is data, never code.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from typing import Any

import numpy as np


def write_shard(clip_id: str, kind: str, array: np.ndarray, meta: dict[str, Any]) -> bytes:
    """One-sample webdataset tar: the array (int32 tokens or float16 latents) as .npy, the metadata as .json."""
    ext = "tokens.npy" if kind == "discrete" else "latents.npy"
    array = array.astype(np.int32 if kind == "discrete" else np.float16)
    npy = io.BytesIO()
    np.save(npy, array, allow_pickle=False)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((f"{clip_id}.{ext}", npy.getvalue()), (f"{clip_id}.json", json.dumps(meta).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read_shard(payload: bytes) -> tuple[np.ndarray, str, dict[str, Any]]:
    """A tokenize shard's bytes -> (array, kind, meta). Never unpickles (``allow_pickle=False``)."""
    array, kind, meta = None, None, None
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member) if member.isfile() else None
            if f is None:
                continue
            name = member.name
            if name.endswith(".tokens.npy") or name.endswith(".latents.npy"):
                array = np.load(io.BytesIO(f.read()), allow_pickle=False)
                kind = "discrete" if name.endswith(".tokens.npy") else "continuous"
            elif name.endswith(".json"):
                meta = json.loads(f.read())
    if array is None or kind is None:
        raise ValueError("shard has no .tokens.npy / .latents.npy member")
    if kind == "discrete" and array.ndim != 3:
        raise ValueError(f"tokens must be [t, h, w], got {list(array.shape)}")
    if kind == "continuous" and array.ndim != 4:
        raise ValueError(f"latents must be [c, t, h, w], got {list(array.shape)}")
    return array, kind, meta or {}
