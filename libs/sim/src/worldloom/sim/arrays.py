"""How Gymnasium spaces map to stored arrays (dtype, shape) and to a JSON description."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from worldloom.video.ingest import IngestError


def space_shape(space: spaces.Space) -> tuple[int, ...]:
    if isinstance(space, spaces.Discrete):
        return ()
    if space.shape is None:  # composite spaces (Dict, Tuple...): their dtype is refused first
        raise IngestError(422, "unsupported_space", f"{space} spaces have no fixed shape")
    return tuple(space.shape)


def action_dtype(space: spaces.Space) -> np.dtype:
    """int64 for Discrete/MultiDiscrete, int8 for MultiBinary, the space's dtype for Box."""
    return _array_dtype(space, "action")


def _array_dtype(space: spaces.Space, what: str) -> np.dtype:
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return np.dtype(np.int64)
    if isinstance(space, spaces.MultiBinary):
        return np.dtype(np.int8)
    if isinstance(space, spaces.Box):
        return np.dtype(space.dtype)
    raise IngestError(422, f"unsupported_{what}_space",
                      f"{space} {what} spaces are not supported yet (Discrete, Box, MultiDiscrete, MultiBinary are)")


def stored_observation_dtype(space: spaces.Space, max_bytes: int) -> np.dtype | None:
    """Observations are stored only when flat-numeric and small: pixels are already in the video."""
    try:
        dtype = _array_dtype(space, "observation")
    except IngestError:
        return None
    return dtype if math.prod(space_shape(space)) * dtype.itemsize <= max_bytes else None


def describe_space(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a space: type, n/shape/dtype, bounds (when short)."""
    out: dict[str, Any] = {"type": type(space).__name__, "repr": str(space)}
    if isinstance(space, spaces.Discrete):
        out.update(n=int(space.n), start=int(space.start), dtype="int64", shape=[])
    elif isinstance(space, spaces.Box):
        out.update(shape=list(space.shape), dtype=str(space.dtype),
                   low=_bound(space.low), high=_bound(space.high))
    elif isinstance(space, spaces.MultiDiscrete):
        out.update(shape=list(space.shape), dtype="int64", nvec=_bound(space.nvec), start=_bound(space.start))
    elif isinstance(space, spaces.MultiBinary):
        out.update(shape=list(space.shape), dtype="int8")
    return out


def _bound(values: np.ndarray) -> Any:
    """A scalar when all equal, a list when short, else None; +-inf as strings (strict JSON)."""
    flat = np.asarray(values).ravel()
    if flat.size and np.all(flat == flat[0]):
        return _num(flat[0])
    return [_num(v) for v in flat] if flat.size <= 64 else None


def _num(v: Any) -> Any:
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else "-inf" if v < 0 else "nan"
    return v
