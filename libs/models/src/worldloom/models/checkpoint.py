"""Safetensors checkpoints for every kind of model (tokenizers, world models, next: policies); never pickle.

A checkpoint ``<name>.safetensors`` comes with

* ``<name>.optim.safetensors``  the optimiser's tensors (only when saved with ``optimizer=``), e.g. Adam moments;
* ``<name>.json``               the sidecar: format, config, step, user ``extra``, the optimiser's
                                hyper-parameters / scalar state, and the SHA-256 of each tensor file (a
                                sidecar paired with the wrong weights is caught).

Pickle-based checkpoints (``torch.save``) execute code on load, which is unacceptable for files that arrive
from other machines or users, so :func:`read_safetensors` checks the file structure itself before handing
it to the safetensors parser and rejects pickles, zips, garbage and truncated files with a
:class:`CheckpointError` that says which. Every file is written to a temp name and renamed, so a crash
mid-save leaves the previous checkpoint intact.

In the object store, :class:`StoreCheckpoints` keeps a job's resumable checkpoints (a folder per step and a
``latest.json`` pointer written last) and :func:`publish_files` / :func:`fetch_files` move a finished
model (weights first, sidecar last: a sidecar in the store means its weights are complete).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from worldloom.core.store.base import InvalidKey, ObjectNotFound, ObjectStore

MAX_HEADER_BYTES = 100 * 1024 * 1024  # same bound the safetensors library applies
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
SIDECAR_VERSION = 1


class CheckpointError(ValueError):
    """The file is missing, not a valid safetensors file, or does not match the sidecar/model."""


@dataclass
class TrainState:
    """What a load restores besides the weights."""

    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    optimizer_restored: bool = False


@dataclass
class Checkpoint:
    """A checkpoint read from disk: validated weights and its metadata (the sidecar, or the weights'
    header metadata when there is no sidecar)."""

    path: Path
    weights: dict[str, Tensor]
    meta: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.meta["config"])

    @property
    def state(self) -> TrainState:
        return TrainState(step=int(self.meta.get("step", 0)), extra=dict(self.meta.get("extra", {})))


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(".json")


def optimizer_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(".optim.safetensors")


# ------------------------------------------------------------------------------------------ validation


def _not_safetensors_reason(head: bytes, size: int) -> str:
    """Best guess at what a file that failed the safetensors framing check is, for the error message."""
    if head.startswith(b"PK\x03\x04"):
        return "not safetensors but a zip archive (torch.save format, a pickle inside; loading it could run code)"
    if head.startswith(b"\x80") or head[:1] in (b"(", b"}", b"]", b"c"):
        return "not safetensors but (most likely) a Python pickle (loading it could run arbitrary code)"
    if size < 8:
        return f"not a valid safetensors file ({size} bytes is too short; truncated?)"
    return "not a valid safetensors file (header length/JSON header invalid: garbage or truncated)"


def check_safetensors(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate the safetensors framing of ``path`` without trusting it; returns the parsed header.

    Layout: 8-byte little-endian header length N, N bytes of JSON header, then the tensor bytes.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        raw = f.read(n) if 2 <= n <= min(MAX_HEADER_BYTES, size - 8) else b""
    if not raw.startswith(b"{"):
        raise CheckpointError(f"{p}: {_not_safetensors_reason(head, size)}; refusing to load it")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p}: not a valid safetensors file (header is not JSON: {exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{p}: not a valid safetensors file (header is not a JSON object)")
    data_size, end = size - 8 - n, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(v) for v in info["data_offsets"])
            nbytes = math.prod(int(d) for d in info["shape"]) * _DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{p}: not a valid safetensors file (bad entry for {name!r})") from exc
        if not 0 <= begin <= stop or stop - begin != nbytes:
            raise CheckpointError(f"{p}: not a valid safetensors file (inconsistent offsets for {name!r})")
        end = max(end, stop)
    if end > data_size:
        raise CheckpointError(f"{p}: truncated safetensors file ({data_size} data bytes, header needs {end})")
    return header


def read_safetensors(path: str | os.PathLike[str], device: str = "cpu") -> dict[str, Tensor]:
    """Tensors of a validated safetensors file (never unpickles; see :func:`check_safetensors`)."""
    check_safetensors(path)
    try:
        return load_file(str(path), device=device)
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from exc


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -------------------------------------------------------------------------------------------- saving


def _atomic_tensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # the library creates 0600 files; checkpoints are meant to be shared read-only
    os.replace(tmp, path)


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except TypeError as exc:
        raise CheckpointError(f"value {where} of type {type(value).__name__} cannot be stored without pickle") from exc
    return value


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimiser ``state_dict`` -> (tensors for safetensors, JSON-able rest)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = _jsonable(value, f"optimizer state[{pid}][{key}]")
    groups = [{k: _jsonable(v, f"optimizer param_groups.{k}") for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, slots in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(slots)
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: str | os.PathLike[str], state_dict: dict[str, Tensor], *, format: str,
                    config: dict[str, Any], meta: dict[str, Any] | None = None,
                    optimizer: torch.optim.Optimizer | None = None, step: int = 0,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write weights (+ optimiser tensors) as safetensors and the JSON sidecar; returns the weights path.

    ``format`` names the kind (e.g. ``worldloom-tokenizer``) and ``meta`` adds kind-specific sidecar keys
    (e.g. a world model's ``family``); both also go into the weights' header metadata with the config, so a
    weights file alone still says what it is. ``extra`` must be JSON-serialisable (loss history, metrics).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint path must end in .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    header = {"format": format, "config": json.dumps(config), **{k: str(v) for k, v in meta.items()}}
    _atomic_tensors(state_dict, path, header)
    sidecar: dict[str, Any] = {"format": format, "version": SIDECAR_VERSION, **meta, "config": config,
                               "step": int(step), "extra": _jsonable(extra or {}, "extra"),
                               "weights": {"file": path.name, "sha256": sha256_file(path)}, "optimizer": None}
    if optimizer is not None:
        tensors, rest = _split_optimizer(optimizer.state_dict())
        opath = optimizer_path(path)
        _atomic_tensors(tensors, opath)
        sidecar["optimizer"] = {"file": opath.name, "sha256": sha256_file(opath), "class": type(optimizer).__name__,
                                **rest}
    side = sidecar_path(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(sidecar, indent=1))
    os.replace(tmp, side)
    return path


# ------------------------------------------------------------------------------------------- loading


def read_checkpoint(path: str | os.PathLike[str], *, format: str, device: str = "cpu",
                    require_sidecar: bool = True) -> Checkpoint:
    """Validated weights and metadata of a ``format`` checkpoint.

    The sidecar's SHA-256 must match the weights. Without a sidecar (and ``require_sidecar=False``) the
    metadata comes from the weights' header (step 0, no optimiser state)."""
    path = Path(path)
    weights = read_safetensors(path, device=device)
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{side}: sidecar is not valid JSON ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != format:
            raise CheckpointError(f"{side}: not a {format} sidecar")
        expected = (meta.get("weights") or {}).get("sha256")
        if expected and expected != sha256_file(path):
            raise CheckpointError(f"{path}: weights do not match the sidecar {side.name} (SHA-256 differs)")
        if "config" not in meta:
            raise CheckpointError(f"{side}: sidecar has no config")
        return Checkpoint(path, weights, meta)
    if require_sidecar:
        raise CheckpointError(f"{path}: sidecar {side.name} is missing")
    header = check_safetensors(path).get("__metadata__") or {}
    if header.get("config") is None:
        raise CheckpointError(f"{path}: no sidecar {side.name} and no config in the file metadata")
    if header.get("format", format) != format:
        raise CheckpointError(f"{path}: a {header['format']} file, not {format}")
    meta = {k: v for k, v in header.items() if k != "config"}
    meta["config"] = json.loads(header["config"])
    return Checkpoint(path, weights, meta)


def load_weights(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Strict load; a mismatch is a CheckpointError that names the file."""
    try:
        model.load_state_dict(ckpt.weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.path}: weights do not fit the config: {exc}") from exc


def restore_optimizer(optimizer: torch.optim.Optimizer, ckpt: Checkpoint, device: str = "cpu") -> bool:
    """Restore the optimiser state saved with the checkpoint; False when it has none."""
    opt_meta = ckpt.meta.get("optimizer")
    if not opt_meta:
        return False
    opath = ckpt.path.with_name(opt_meta["file"])
    if not opath.is_file():
        raise CheckpointError(f"{opath}: optimizer state file named in the sidecar is missing")
    if opt_meta.get("sha256") and opt_meta["sha256"] != sha256_file(opath):
        raise CheckpointError(f"{opath}: optimizer state does not match the sidecar (SHA-256 differs)")
    optimizer.load_state_dict(_optimizer_state(read_safetensors(opath, device=device), opt_meta))
    return True


# ------------------------------------------------------------------------------------- object store


def publish_files(store: ObjectStore, folder: Path, key_prefix: str) -> None:
    """Upload a saved checkpoint's files under ``key_prefix``: tensor files first, the sidecar last, so a
    reader that finds the sidecar finds complete weights."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".tmp"))
    for f in sorted(files, key=lambda p: p.suffix == ".json"):
        with open(f, "rb") as fh:
            store.put_file(f"{key_prefix.rstrip('/')}/{f.name}", fh, f.stat().st_size)


def fetch_files(store: ObjectStore, weights_key: str, into: Path, *, sidecar: bool = True) -> Path:
    """Download a published model's weights (and sidecar) into ``into``; returns the local weights path.

    A missing weights file raises ObjectNotFound; a missing sidecar is an error only with ``sidecar=True``."""
    into.mkdir(parents=True, exist_ok=True)
    local = into / weights_key.rsplit("/", 1)[-1]
    store.download(weights_key, str(local))
    try:
        store.download(weights_key.removesuffix(".safetensors") + ".json", str(sidecar_path(local)))
    except (ObjectNotFound, InvalidKey):
        if sidecar:
            raise
    return local


class StoreCheckpoints:
    """A job's resumable checkpoints: ``<prefix>/checkpoints/step-<n>/`` folders and a ``latest.json`` pointer.

    The pointer is written last, so a worker killed mid-upload leaves the previous checkpoint as the one
    to resume from; older checkpoints are pruned only after the new pointer is in place."""

    def __init__(self, store: ObjectStore, prefix: str, keep: int = 2) -> None:
        self.store, self.prefix, self.keep = store, prefix.rstrip("/"), max(1, keep)

    @property
    def pointer_key(self) -> str:
        return f"{self.prefix}/checkpoints/latest.json"

    def step_prefix(self, step: int) -> str:
        return f"{self.prefix}/checkpoints/step-{step:09d}"

    def latest(self) -> dict[str, Any] | None:
        """The pointer: ``{"step": n, "prefix": ..., "files": [...]}``, or None before the first save."""
        try:
            return json.loads(self.store.get_bytes(self.pointer_key))
        except ObjectNotFound:
            return None

    def save(self, step: int, write: Callable[[Path], Any]) -> str:
        """``write(dir)`` puts the checkpoint files into a temp dir; they are uploaded, then the pointer."""
        with tempfile.TemporaryDirectory(prefix="wl-ckpt-") as tmp:
            folder = Path(tmp)
            write(folder)
            files = sorted(p.name for p in folder.iterdir() if p.is_file())
            if not files:
                raise ValueError("checkpoint writer produced no files")
            prefix = self.step_prefix(step)
            publish_files(self.store, folder, prefix)
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
