"""An episode's per-step arrays beside its video: checked, normalised, stored and read one way for every source.

Ingest writes them for simulator episodes (``POST /v1/sources/gymnasium``) and for uploads that carry
arrays (``POST /v1/videos``); curation, tokenization and training read them back with
:func:`read_episode_arrays`. Stored at ``raw/<video_id>/actions.safetensors`` (catalog.actions_key) with
the sidecar ``raw/<video_id>/actions.json`` (catalog.actions_meta_key).

Frame alignment: a video of T frames takes T - 1 or T rows per array; row i belongs to frame i, and
``actions[i]`` leads from frame i to frame i + 1 (a T-th action leads past the last frame and is kept).

Untrusted input is data: ``.npy`` is read with ``allow_pickle=False`` after its header was checked (an
object/pickled array is refused before any load), safetensors after its framing was checked, JSON within
the service kit's depth/number bounds. Arrays are normalised on the way in (floats to float32, integers to
int64, flags to bool), so the same episode always encodes to the same bytes.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from worldloom.core.catalog import actions_key
from worldloom.core.errors import Refusal
from worldloom.core.service.jsonbody import json_problem
from worldloom.core.store.base import ObjectNotFound, ObjectStore

FRAME_ALIGNMENT = ("T frames take T-1 or T rows per array; row i belongs to frame i; actions[i] leads from "
                   "frame i to frame i+1")

Kind = Literal["value", "reward", "flag"]


@dataclass(frozen=True)
class ArraySpec:
    """What one named array may hold: ``value`` (float -> float32, int -> int64), ``reward`` (float32) or
    ``flag`` (bool, or 0/1 numbers); ``one_d`` arrays have one value per row; ``width`` names the
    EpisodeLimits field that bounds the values per row (None: bounded by its source, e.g. observations)."""

    kind: Kind
    one_d: bool = False
    width: str | None = None
    integer_ids: bool = False  # integer values are ids: >= 0 (discrete actions)


SPECS: dict[str, ArraySpec] = {
    "actions": ArraySpec("value", width="max_action_dims", integer_ids=True),
    "states": ArraySpec("value", width="max_state_dims"),
    "rewards": ArraySpec("reward", one_d=True),
    "terminated": ArraySpec("flag", one_d=True),
    "truncated": ArraySpec("flag", one_d=True),  # simulator episodes
    "observations": ArraySpec("value"),  # simulator episodes, stored only when small (max_observation_bytes)
}
#: what an upload may carry beside its video (actions required)
UPLOAD_ARRAYS = ("actions", "states", "rewards", "terminated")
MAX_NDIM = 4

_NPY_MAGIC = b"\x93NUMPY"
_SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "I16": np.int16,
                       "I32": np.int32, "I64": np.int64, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
                       "U64": np.uint64, "BOOL": np.bool_}


class ArrayRejected(Refusal):
    """An episode's arrays cannot be stored: ``code`` names the problem (see README, "Episodes with actions")."""


@dataclass(frozen=True)
class EpisodeLimits:
    max_action_dims: int = 64
    max_state_dims: int = 256
    max_array_bytes: int = 64 * 1024 * 1024  # one array's file, and all of an upload's arrays together
    max_json_bytes: int = 4 * 1024 * 1024  # JSON is for small arrays


# ------------------------------------------------------------------------------------------------ decoding


def decode_array(name: str, data: bytes, limits: EpisodeLimits) -> np.ndarray:
    """One array from ``.npy`` bytes or a JSON (nested) list."""
    if data.startswith(_NPY_MAGIC):
        return _decode_npy(name, data)
    if data.lstrip()[:1] == b"[":
        value = _decode_json(name, data, limits)
        return _json_array(name, value)
    raise ArrayRejected(400, "invalid_array", f"{name!r} is neither .npy nor a JSON list{_guess(data)}; send one "
                        "array per part as .npy (np.save) or JSON, or several in the 'arrays' part (safetensors or a "
                        "JSON object)")


def decode_arrays(data: bytes, limits: EpisodeLimits) -> dict[str, np.ndarray]:
    """Named arrays from safetensors bytes or a JSON object of (nested) lists."""
    if data.lstrip()[:1] == b"{":
        value = _decode_json("arrays", data, limits)
        if not isinstance(value, dict):
            raise ArrayRejected(400, "invalid_array", "'arrays' JSON must be an object: name -> list")
        return {str(k): _json_array(str(k), v) for k, v in value.items()}
    return _decode_safetensors(data)


def _guess(data: bytes) -> str:
    if data[:2] == b"PK":
        return " (a zip archive, e.g. .npz: send each array as .npy)"
    if data[:1] == b"\x80":
        return " (a Python pickle: refused, loading one could run code)"
    return ""


def _decode_npy(name: str, data: bytes) -> np.ndarray:
    """A .npy read only after its header proves a plain numeric array of exactly the bytes that follow."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0(f) if version == (1, 0) else \
            np.lib.format.read_array_header_2_0(f) if version == (2, 0) else None
    except ValueError as exc:
        raise ArrayRejected(400, "invalid_array", f"{name!r} has an invalid .npy header: {exc}") from None
    if header is None:
        raise ArrayRejected(400, "invalid_array", f"{name!r}: .npy format version {version} is not supported (1.0, 2.0)")
    shape, _, dtype = header
    if dtype.hasobject:
        raise ArrayRejected(422, "pickled_array", f"{name!r} is an object array (pickled Python objects): refused, "
                            "loading it could run code; save a numeric array")
    if len(shape) > MAX_NDIM:
        raise ArrayRejected(422, "array_shape", f"{name!r} has {len(shape)} dimensions; at most {MAX_NDIM}")
    need = math.prod(shape) * dtype.itemsize
    if need != len(data) - f.tell():
        raise ArrayRejected(400, "invalid_array", f"{name!r}: the .npy header declares {need} data bytes, the file "
                            f"holds {len(data) - f.tell()} (truncated or padded)")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise ArrayRejected(400, "invalid_array", f"{name!r} cannot be read as .npy: {exc}") from None


def _decode_json(name: str, data: bytes, limits: EpisodeLimits) -> Any:
    if len(data) > limits.max_json_bytes:
        raise ArrayRejected(413, "arrays_too_large", f"{name!r} is {len(data)} bytes of JSON; JSON arrays are for "
                            f"small episodes (max_json_bytes {limits.max_json_bytes}): send .npy or safetensors")
    if problem := json_problem(data):
        raise ArrayRejected(400, "invalid_array", f"{name!r} is refused: {problem}")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except ArrayRejected:
        raise
    except ValueError as exc:
        raise ArrayRejected(400, "invalid_array", f"{name!r} is not valid JSON: {exc}") from None


def _no_constant(token: str) -> Any:
    raise ArrayRejected(422, "array_not_finite", f"JSON holds {token}: every value must be a finite number")


def _json_array(name: str, value: Any) -> np.ndarray:
    if not isinstance(value, list):
        raise ArrayRejected(400, "invalid_array", f"{name!r} must be a JSON list (one entry per row)")
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged
        raise ArrayRejected(422, "array_shape", f"{name!r} is not rectangular: {exc}") from None
    if array.dtype.kind not in "biuf":
        raise ArrayRejected(422, "array_dtype", f"{name!r} must hold numbers (or true/false), not {_kind(array)}")
    return array


def _kind(array: np.ndarray) -> str:
    return {"U": "strings", "S": "bytes", "O": "mixed or nested values", "c": "complex numbers"}.get(
        array.dtype.kind, str(array.dtype))


def _decode_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """Checks the framing (8-byte length, JSON header, offsets inside the data) before the parser sees it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if len(data) < 8:
        raise ArrayRejected(400, "invalid_array", f"'arrays' is neither safetensors nor a JSON object{_guess(data)}")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or data[8:9] != b"{":
        raise ArrayRejected(400, "invalid_array", f"'arrays' is neither safetensors nor a JSON object{_guess(data)}")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as exc:
        raise ArrayRejected(400, "invalid_array", f"'arrays': the safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ArrayRejected(400, "invalid_array", "'arrays': the safetensors header is not a JSON object")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise ArrayRejected(400, "invalid_array", f"'arrays': the safetensors entry {name!r} is malformed")
        dtype = info.get("dtype")
        if dtype not in _SAFETENSORS_DTYPES:
            raise ArrayRejected(422, "array_dtype", f"{name!r} is {dtype!r} in safetensors; numeric dtypes only "
                                f"({', '.join(_SAFETENSORS_DTYPES)})")
        if len(info["shape"]) > MAX_NDIM:
            raise ArrayRejected(422, "array_shape", f"{name!r} has more than {MAX_NDIM} dimensions")
    try:
        return dict(load(data))
    except (SafetensorError, ValueError) as exc:
        raise ArrayRejected(400, "invalid_array", f"'arrays' is not a valid safetensors file: {exc}") from None


# ---------------------------------------------------------------------------------------------- checking


def check_arrays(arrays: Mapping[str, np.ndarray], limits: EpisodeLimits,
                 allowed: tuple[str, ...] = UPLOAD_ARRAYS) -> dict[str, np.ndarray]:
    """The arrays checked (names, dtypes, finite, shapes, widths) and normalised; ArrayRejected otherwise.
    Their lengths against the video are :meth:`Episode.check_frames`' (the frame count is known later)."""
    unknown = sorted(set(arrays) - set(allowed))
    if unknown:
        raise ArrayRejected(422, "unknown_array", f"unknown array {unknown[0]!r}; allowed: {', '.join(allowed)}")
    if "actions" not in arrays:
        raise ArrayRejected(422, "missing_actions", f"arrays without 'actions': an episode's arrays start with its "
                            f"actions (given: {', '.join(sorted(arrays)) or 'none'})")
    total = sum(int(a.nbytes) for a in arrays.values())
    if total > limits.max_array_bytes:
        raise ArrayRejected(413, "arrays_too_large", f"the arrays hold {total} bytes; at most {limits.max_array_bytes} "
                            "(max_array_bytes)")
    return {name: _check(name, np.asarray(arrays[name]), SPECS[name], limits) for name in sorted(arrays)}


def _check(name: str, a: np.ndarray, spec: ArraySpec, limits: EpisodeLimits) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise ArrayRejected(422, "array_dtype", f"{name!r} is {a.dtype}: numbers only (float, int, bool)")
    if a.ndim == 0 or a.ndim > MAX_NDIM:
        raise ArrayRejected(422, "array_shape", f"{name!r} has shape {list(a.shape)}: one row per frame or step, at "
                            f"most {MAX_NDIM} dimensions")
    if spec.one_d and a.ndim != 1:
        raise ArrayRejected(422, "array_shape", f"{name!r} has shape {list(a.shape)}: one value per row ([T] or [T-1])")
    width = math.prod(a.shape[1:])
    if spec.width is not None and width > getattr(limits, spec.width):
        raise ArrayRejected(422, "array_too_wide", f"{name!r} has {width} values per row; at most "
                            f"{getattr(limits, spec.width)} ({spec.width})")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a.reshape(-1)))[0]) // max(width, 1)
        raise ArrayRejected(422, "array_not_finite", f"{name!r} holds NaN or infinity (first in row {bad}): every "
                            "value must be finite")
    if spec.kind == "flag":
        if a.dtype.kind != "b" and not np.isin(a, (0, 1)).all():
            raise ArrayRejected(422, "array_dtype", f"{name!r} must be bool or 0/1, found other values")
        return a.astype(np.bool_)
    if a.dtype.kind == "b":
        raise ArrayRejected(422, "array_dtype", f"{name!r} is bool: numbers only (bool is for terminated/truncated)")
    if spec.kind == "reward":
        return a.astype(np.float32)
    if a.dtype.kind == "f":
        return a.astype(np.float32)
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise ArrayRejected(422, "array_dtype", f"{name!r} holds values past int64")
    if spec.integer_ids and a.size and int(a.min()) < 0:
        raise ArrayRejected(422, "array_dtype", f"integer {name!r} are discrete ids and must be >= 0 (found "
                            f"{int(a.min())}); send continuous values as floats")
    return a.astype(np.int64)


# ----------------------------------------------------------------------------------------------- storing


@dataclass(frozen=True)
class Episode:
    """Checked arrays (:func:`check_arrays`) and what the stored files say about them: ``format`` names the
    source, ``header`` goes into the safetensors metadata, ``fields`` into the sidecar (over the common ones)."""

    arrays: dict[str, np.ndarray]
    format: str
    header: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)

    def check_frames(self, frames: int) -> None:
        """Every array has T - 1 or T rows for a video of T frames."""
        for name, a in self.arrays.items():
            if a.shape[0] not in (frames - 1, frames):
                raise ArrayRejected(422, "array_length", f"{name!r} has {a.shape[0]} rows; the video has {frames} "
                                    f"frames, so {frames - 1} or {frames} rows")

    def encode(self) -> bytes:
        """The safetensors bytes, the same for the same episode."""
        from safetensors.numpy import save

        # one metadata key: safetensors writes __metadata__ from a hash map, so several keys come out in a
        # random order and the bytes would differ between identical episodes
        meta = json.dumps({"format": self.format, "frame_alignment": FRAME_ALIGNMENT, **self.header}, sort_keys=True)
        return save(dict(self.arrays), metadata={"worldloom": meta})

    def describe(self, frames: int, fps: float) -> dict[str, Any]:
        """The sidecar (actions.json): frames, steps, fps, alignment, action_space, per-array shape/dtype."""
        actions = self.arrays["actions"]
        out: dict[str, Any] = {
            "format": self.format, "frames": frames, "steps": int(actions.shape[0]), "fps": float(fps),
            "frame_alignment": FRAME_ALIGNMENT, "action_space": action_space(actions),
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.arrays.items()},
        }
        out.update(self.fields)
        return out

    def description_bytes(self, frames: int, fps: float) -> bytes:
        return (json.dumps(self.describe(frames, fps), indent=2, sort_keys=True) + "\n").encode()


def action_space(actions: np.ndarray) -> dict[str, Any]:
    """The space stored actions came from, as the simulator describes its own (train reads type/n/shape):
    floats are a Box, 1-D integer ids Discrete(max + 1), wider integer ids MultiDiscrete."""
    shape = list(actions.shape[1:])
    if actions.dtype.kind == "f":
        return {"type": "Box", "shape": shape, "dtype": str(actions.dtype)}
    top = actions.max(axis=0) + 1 if actions.size else np.zeros(shape, np.int64)
    if not shape:
        return {"type": "Discrete", "n": int(top), "start": 0, "dtype": "int64", "shape": []}
    return {"type": "MultiDiscrete", "shape": shape, "dtype": "int64", "nvec": np.asarray(top).tolist()}


def read_episode_arrays(store: ObjectStore, video_id: str) -> dict[str, np.ndarray] | None:
    """The per-step arrays stored with a video (``actions`` and whichever of ``states``, ``rewards``,
    ``terminated``, ``truncated``, ``observations`` it has), or None when it has none."""
    from safetensors.numpy import load

    try:
        payload = store.get_bytes(actions_key(video_id))
    except ObjectNotFound:
        return None
    return dict(load(payload))


#: the sidecar ``format`` of arrays that came with an upload (simulator episodes: worldloom.gymnasium/1)
UPLOAD_FORMAT = "worldloom.upload/1"
#: the multipart parts an upload may carry arrays in: one per array (.npy or JSON), or several in ``arrays``
UPLOAD_PARTS = ("arrays", *UPLOAD_ARRAYS)


def episode_from_parts(parts: Mapping[str, bytes], limits: EpisodeLimits) -> Episode | None:
    """An upload's arrays from its parts (``arrays``: safetensors or a JSON object; ``actions``, ``states``,
    ``rewards``, ``terminated``: .npy or JSON each), checked; None when it carries none."""
    if not parts:
        return None
    unknown = sorted(set(parts) - set(UPLOAD_PARTS))
    if unknown:
        raise ArrayRejected(422, "unknown_array", f"unknown array part {unknown[0]!r}; allowed: {', '.join(UPLOAD_PARTS)}")
    total = sum(len(v) for v in parts.values())
    if total > limits.max_array_bytes:
        raise ArrayRejected(413, "arrays_too_large", f"the array parts are {total} bytes; at most "
                            f"{limits.max_array_bytes} (max_array_bytes)")
    arrays = decode_arrays(parts["arrays"], limits) if "arrays" in parts else {}
    for name in UPLOAD_ARRAYS:
        if name in parts:
            if name in arrays:
                raise ArrayRejected(400, "duplicate_array", f"{name!r} is both in 'arrays' and its own part; send it once")
            arrays[name] = decode_array(name, parts[name], limits)
    return Episode(check_arrays(arrays, limits), UPLOAD_FORMAT)
