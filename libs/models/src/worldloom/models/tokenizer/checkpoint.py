"""Checkpoints as safetensors + a JSON sidecar; nothing is ever pickled or unpickled.

``save_checkpoint("run/tok.safetensors", model, optimizer=opt, step=n)`` writes

* ``tok.safetensors``        model weights (the config is also copied into the header metadata);
* ``tok.optim.safetensors``  optimiser state tensors (only with ``optimizer=``), e.g. Adam moments;
* ``tok.json``               config, step, user ``extra``, optimiser hyper-parameters / scalar state,
                             and the SHA-256 of each tensor file (catches a sidecar paired with the
                             wrong weights).

Pickle-based checkpoints (``torch.save``) execute code on load, which is unacceptable for files that
arrive from other machines or users, so :func:`read_safetensors` checks the file structure itself
before handing it to the safetensors parser and rejects pickles, zips, garbage and truncated files with
a :class:`CheckpointError` that says which. Every file is written to a temp name and renamed, so a
crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from worldloom.models.tokenizer.model import CausalVideoTokenizer, TokenizerConfig

FORMAT = "worldloom-tokenizer"
VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024  # same bound the safetensors library applies
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


class CheckpointError(ValueError):
    """The file is missing, not a valid safetensors file, or does not match the sidecar/model."""


@dataclass
class TrainState:
    """What :func:`load_checkpoint` restores besides the weights."""

    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    optimizer_restored: bool = False


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


# -------------------------------------------------------------------------------------------- saving


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        raise CheckpointError(f"optimizer value {where} of type {type(value).__name__} cannot be stored "
                              "without pickle") from exc
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
                scalars.setdefault(str(pid), {})[key] = _jsonable(value, f"state[{pid}][{key}]")
    groups = [{k: _jsonable(v, f"param_groups.{k}") for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def save_checkpoint(path: str | os.PathLike[str], model: CausalVideoTokenizer, *,
                    optimizer: torch.optim.Optimizer | None = None, step: int = 0,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write weights (+ optimiser tensors) as safetensors and the JSON sidecar; returns the weights path.

    ``extra`` must be JSON-serialisable (e.g. loss history, data cursor).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint path must end in .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    _atomic_tensors(model.state_dict(), path, {"format": FORMAT, "config": json.dumps(cfg)})
    sidecar: dict[str, Any] = {"format": FORMAT, "version": VERSION, "config": cfg, "step": int(step),
                               "extra": _jsonable(extra or {}, "extra"),
                               "weights": {"file": path.name, "sha256": _sha256(path)}, "optimizer": None}
    if optimizer is not None:
        tensors, rest = _split_optimizer(optimizer.state_dict())
        opath = optimizer_path(path)
        _atomic_tensors(tensors, opath)
        sidecar["optimizer"] = {"file": opath.name, "sha256": _sha256(opath), "class": type(optimizer).__name__,
                                **rest}
    side = sidecar_path(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(sidecar, indent=1))
    os.replace(tmp, side)
    return path


# ------------------------------------------------------------------------------------------- loading


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


def load_checkpoint(path: str | os.PathLike[str], *, model: CausalVideoTokenizer | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    device: str = "cpu") -> tuple[CausalVideoTokenizer, TrainState]:
    """Load weights (strict) into ``model``, or into a model rebuilt from the sidecar config.

    To resume training pass the ``model`` and the ``optimizer`` built over its parameters; the optimiser
    state is restored from the ``.optim.safetensors`` file when the checkpoint has one
    (``TrainState.optimizer_restored``). Without a sidecar the config is taken from the weights file's
    metadata (step 0, no optimiser state).
    """
    if optimizer is not None and model is None:
        raise ValueError("pass the model the optimizer was built over together with the optimizer")
    path = Path(path)
    weights = read_safetensors(path, device=device)
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{side}: sidecar is not valid JSON ({exc})") from exc
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{side}: not a {FORMAT} sidecar")
        expected = meta.get("weights", {}).get("sha256")
        if expected and expected != _sha256(path):
            raise CheckpointError(f"{path}: weights do not match the sidecar {side.name} (SHA-256 differs)")
        config_dict = meta["config"]
    else:
        config_json = check_safetensors(path).get("__metadata__", {}).get("config")
        if config_json is None:
            raise CheckpointError(f"{path}: no sidecar {side.name} and no config in the file metadata")
        meta, config_dict = {}, json.loads(config_json)
    config = TokenizerConfig.from_dict(config_dict)
    if model is None:
        model = CausalVideoTokenizer(config).to(device)
    elif model.config != config:
        raise CheckpointError(f"{path}: checkpoint config {config} differs from the model's {model.config}")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the config: {exc}") from exc
    state = TrainState(step=int(meta.get("step", 0)), extra=meta.get("extra", {}))
    opt_meta = meta.get("optimizer")
    if optimizer is not None and opt_meta:
        opath = path.with_name(opt_meta["file"])
        if not opath.is_file():
            raise CheckpointError(f"{opath}: optimizer state file named in the sidecar is missing")
        if opt_meta.get("sha256") and opt_meta["sha256"] != _sha256(opath):
            raise CheckpointError(f"{opath}: optimizer state does not match the sidecar (SHA-256 differs)")
        optimizer.load_state_dict(_optimizer_state(read_safetensors(opath, device=device), opt_meta))
        state.optimizer_restored = True
    return model, state
