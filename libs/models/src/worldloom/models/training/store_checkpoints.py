"""Checkpoints in the object store: a folder of files per step plus a ``latest.json`` pointer.

The pointer is written last, so a worker killed mid-upload leaves the previous checkpoint as the one
to resume from; older checkpoints are pruned only after the new pointer is in place.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from worldloom.core.store.base import ObjectNotFound, ObjectStore


class StoreCheckpoints:
    def __init__(self, store: ObjectStore, prefix: str, keep: int = 2) -> None:
        self.store, self.prefix, self.keep = store, prefix.rstrip("/"), max(1, keep)

    @property
    def pointer_key(self) -> str:
        return f"{self.prefix}/checkpoints/latest.json"

    def step_prefix(self, step: int) -> str:
        return f"{self.prefix}/checkpoints/step-{step:09d}"

    def latest(self) -> dict | None:
        """The pointer: ``{"step": n, "prefix": ..., "files": [...]}``, or None before the first save."""
        try:
            return json.loads(self.store.get_bytes(self.pointer_key))
        except ObjectNotFound:
            return None

    def save(self, step: int, write: Callable[[Path], None]) -> str:
        """``write(dir)`` puts the checkpoint files into a temp dir; they are uploaded, then the pointer."""
        with tempfile.TemporaryDirectory(prefix="wl-ckpt-") as tmp:
            folder = Path(tmp)
            write(folder)
            files = sorted(p.name for p in folder.iterdir() if p.is_file())
            if not files:
                raise ValueError("checkpoint writer produced no files")
            prefix = self.step_prefix(step)
            for name in files:
                with open(folder / name, "rb") as fh:
                    self.store.put_file(f"{prefix}/{name}", fh, (folder / name).stat().st_size)
        self.store.put_bytes(self.pointer_key, json.dumps({"step": step, "prefix": prefix, "files": files}).encode(),
                             "application/json")
        self._prune(keep_prefix=prefix)
        return prefix

    def restore(self, into: Path) -> int | None:
        """Download the latest checkpoint's files into ``into``; returns its step (None: nothing saved)."""
        pointer = self.latest()
        if pointer is None:
            return None
        into.mkdir(parents=True, exist_ok=True)
        for name in pointer["files"]:
            self.store.download(f"{pointer['prefix']}/{name}", str(into / name))
        return int(pointer["step"])

    def _prune(self, keep_prefix: str) -> None:
        steps = sorted({info.key.split("/")[-2] for info in self.store.list(f"{self.prefix}/checkpoints/")
                        if info.key.split("/")[-2].startswith("step-")})
        keep = set(steps[-self.keep:]) | {keep_prefix.rsplit("/", 1)[-1]}
        for info in list(self.store.list(f"{self.prefix}/checkpoints/")):
            folder = info.key.split("/")[-2]
            if folder.startswith("step-") and folder not in keep:
                self.store.delete(info.key)
