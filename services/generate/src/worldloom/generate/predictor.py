"""The KServe predictor: one :class:`WorldModelPredictor` per served world model, speaking the Open
Inference Protocol v2 (REST ``POST /v2/models/<id>/infer`` and, when enabled, gRPC ``ModelInfer``).

Inputs (names are fixed; any other name is refused):

=================  ===========================  ===================================================
name               datatype / shape             meaning
=================  ===========================  ===================================================
context_frames     UINT8 [T,H,W,3] / [B,T,H,W,3]  RGB context; *or* ``clip_id``
clip_id            BYTES [1] / [B]              curated clip ids: context from their train rendition
actions            FP32/FP64 [N,D] / [B,N,D]    continuous actions; INT32/INT64 [N] / [B,N] discrete
text               BYTES [1] / [B]              prompt(s), embedded with MiniLM
num_frames         INT32/INT64 [1]              video frames to predict (required)
seed, top_k,       INT32/INT64 [1]              sampling; seed defaults to a random one (returned)
steps,
clip_start_frame
temperature,       FP32/FP64 [1]                sampling (AR: temperature, top_k; diffusion: steps,
cfg_scale                                       cfg_scale)
resize             BOOL [1]                     centre-crop + resize other resolutions (default true)
=================  ===========================  ===================================================

The scalar ones may instead be given as request ``parameters`` (``{"seed": 3, "num_frames": 8}``), not both.
Output: ``frames`` UINT8 ``[N,R,R,3]`` (``[B,N,R,R,3]`` for a 5-D context or several clip ids); for a model
with a reward head also ``rewards`` and ``termination_probs`` FP32 ``[Ln]`` / ``[B,Ln]`` (one per predicted
latent frame of tc video frames: what RL in imagination needs); plus response parameters
``seed``, ``family``, ``resolution``, ``context_frames_used`` and the sampling settings used (as strings
where they are floats: gRPC parameters carry no floats).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest
from kserve.protocol.infer_type import to_http_parameters

from worldloom.core.store import ObjectStore
from worldloom.generate.clips import ClipNotFound, load_clip_frames
from worldloom.generate.service import BadInput, GenerateRequest, GenerateResult, Sampling, WorldModelEngine
from worldloom.generate.settings import Limits
from worldloom.models.world.registry import load_world_model

log = logging.getLogger("worldloom.generate")

INT_FIELDS = ("num_frames", "seed", "top_k", "steps", "clip_start_frame")
FLOAT_FIELDS = ("temperature", "cfg_scale")
BOOL_FIELDS = ("resize",)
SCALAR_FIELDS = INT_FIELDS + FLOAT_FIELDS + BOOL_FIELDS
ARRAY_FIELDS = ("context_frames", "clip_id", "actions", "text")
INPUT_NAMES = ARRAY_FIELDS + SCALAR_FIELDS
#: request parameters KServe itself understands (binary tensor extension); passed through untouched
KSERVE_PARAMETERS = ("binary_data_output",)

INT_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
FLOAT_TYPES = ("FP16", "FP32", "FP64")


# ----------------------------------------------------------------------------------- request fields


def scalar_field(name: str, value: Any) -> Any:
    """Check and convert one scalar field (from an input tensor or a request parameter)."""
    if isinstance(value, np.generic):
        value = value.item()
    if name in BOOL_FIELDS:
        if not isinstance(value, bool):
            raise BadInput(f"'{name}' must be a boolean, got {value!r}")
        return value
    if isinstance(value, bool):
        raise BadInput(f"'{name}' must be a number, got {value!r}")
    if name in INT_FIELDS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise BadInput(f"'{name}' must be an integer, got {value!r}")
        return value
    if isinstance(value, str):
        try:
            value = float(value)  # gRPC parameters have no float type: "0.7" is accepted
        except ValueError:
            raise BadInput(f"'{name}' must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or value != value:
        raise BadInput(f"'{name}' must be a number, got {value!r}")
    return float(value)


def _strings(name: str, arr: np.ndarray) -> list[str]:
    out = []
    for item in arr.reshape(-1).tolist():
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"'{name}' must be UTF-8 text") from None
        if not isinstance(item, str):
            raise BadInput(f"'{name}' must hold strings")
        out.append(item)
    return out


def _as_numpy(inp: Any) -> np.ndarray:
    shape = list(inp.shape or [])
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise BadInput(f"input '{inp.name}': bad shape {shape}")
    try:
        return inp.as_numpy()
    except (ValueError, TypeError, OverflowError, InvalidInput) as exc:
        raise BadInput(f"input '{inp.name}': data does not match shape {shape} / {inp.datatype} ({exc})") from None


def fields_from_infer_request(request: InferRequest) -> dict[str, Any]:
    """Open Inference Protocol v2 request -> plain fields (numpy arrays, python scalars). Refuses unknown
    input names, duplicate names, wrong datatypes and shapes with :class:`BadInput`."""
    fields: dict[str, Any] = {}
    for inp in request.inputs:
        name, dtype = inp.name, inp.datatype
        if name not in INPUT_NAMES:
            raise BadInput(f"unknown input '{name}'; inputs are {', '.join(INPUT_NAMES)}")
        if name in fields:
            raise BadInput(f"input '{name}' given twice")
        if name == "context_frames":
            if dtype != "UINT8":
                raise BadInput(f"'context_frames' must be UINT8 RGB frames, got {dtype}")
            arr = _as_numpy(inp)
            if arr.ndim == 4:
                arr = arr[None]
            if arr.ndim != 5 or arr.shape[-1] != 3:
                raise BadInput(f"'context_frames' must be [T, H, W, 3] or [B, T, H, W, 3]; got {list(arr.shape)}")
            fields[name] = arr
        elif name in ("clip_id", "text"):
            if dtype != "BYTES":
                raise BadInput(f"'{name}' must be BYTES (strings), got {dtype}")
            values = _strings(name, _as_numpy(inp))
            if not values:
                raise BadInput(f"'{name}' is empty")
            fields[name] = values
        elif name == "actions":
            if dtype not in FLOAT_TYPES + ("INT32", "INT64"):
                raise BadInput(f"'actions' must be FP32/FP64 (continuous) or INT32/INT64 (discrete ids), got {dtype}")
            fields[name] = _as_numpy(inp)
        else:
            allowed = ("BOOL",) if name in BOOL_FIELDS else INT_TYPES if name in INT_FIELDS else INT_TYPES + FLOAT_TYPES
            if dtype not in allowed:
                raise BadInput(f"'{name}' must be one of {'/'.join(allowed)}, got {dtype}")
            arr = _as_numpy(inp)
            if arr.size != 1:
                raise BadInput(f"'{name}' must hold exactly one value (shape [1]); got shape {list(arr.shape)}")
            fields[name] = scalar_field(name, arr.reshape(-1)[0])
    params = request.parameters or {}
    if not isinstance(params, dict):
        params = to_http_parameters(params)
    for key, value in params.items():
        if key in KSERVE_PARAMETERS:
            continue
        if key not in SCALAR_FIELDS:
            raise BadInput(f"unknown parameter '{key}'; parameters are {', '.join(SCALAR_FIELDS)}")
        if key in fields:
            raise BadInput(f"'{key}' given both as an input and as a parameter")
        fields[key] = scalar_field(key, value)
    return fields


# ---------------------------------------------------------------------------------------- predictor


class WorldModelPredictor(Model):
    """A world model from the registry behind KServe. ``load()`` reads ``models/<id>/`` (state must be
    "succeeded") and its tokenizer from the object store; ``predict()`` answers v2 inference requests."""

    def __init__(self, name: str, store: ObjectStore, *, device: str = "cpu", limits: Limits | None = None,
                 default_steps: int = 10, default_temperature: float = 1.0,
                 embed_text: Callable[[list[str]], np.ndarray] | None = None, preload_text: bool = True) -> None:
        super().__init__(name)
        self.preload_text = preload_text
        self.store = store
        self.device = device
        self.limits = limits or Limits()
        self.default_steps = default_steps
        self.default_temperature = default_temperature
        self.embed_text = embed_text
        self.engine: WorldModelEngine | None = None

    def load(self) -> bool:
        """Raises ``ModelNotFound`` / ``ModelNotReady`` / ``CheckpointError`` (registry) or
        ``IncompatibleModel`` with a sentence saying what is wrong."""
        loaded = load_world_model(self.store, self.name, self.device)
        self.engine = WorldModelEngine(loaded, self.limits, default_steps=self.default_steps,
                                       default_temperature=self.default_temperature, embed_text=self.embed_text)
        if self.engine.has_text and self.embed_text is None and self.preload_text:
            from worldloom.models.text_embedder import shared_text_embedder

            shared_text_embedder()  # MiniLM, once per process: the first text request need not wait for it
        self.ready = True
        log.info("loaded world model %s (%s)", self.name, self.engine.describe())
        return self.ready

    # -------------------------------------------------------------------------------------- requests

    def request_from_fields(self, fields: dict[str, Any]) -> GenerateRequest:
        """Fields (from a v2 request or the :video route) -> a :class:`GenerateRequest`; loads clips."""
        engine = self.loaded_engine()
        if ("context_frames" in fields) == ("clip_id" in fields):
            raise BadInput("give exactly one of 'context_frames' or 'clip_id'")
        if "num_frames" not in fields:
            raise BadInput("'num_frames' is required")
        num_frames = int(fields["num_frames"])
        if not 1 <= num_frames <= engine.max_num_frames:
            raise BadInput(f"num_frames={num_frames}; this model predicts 1..{engine.max_num_frames} frames per request")
        if "clip_start_frame" in fields and "clip_id" not in fields:
            raise BadInput("'clip_start_frame' applies to 'clip_id' only")
        if "clip_id" in fields:
            ids = list(fields["clip_id"])
            if not 1 <= len(ids) <= self.limits.max_batch:
                raise BadInput(f"{len(ids)} clip ids; 1..{self.limits.max_batch} per request")
            start = int(fields.get("clip_start_frame", 0))
            count = engine.context_window(num_frames)
            clips = [load_clip_frames(self.store, cid, start, count) for cid in ids]
            if len({c.shape[1:] for c in clips}) > 1:
                raise BadInput("the clips' train renditions differ in size; request them one at a time")
            length = min(c.shape[0] for c in clips)
            context = np.stack([c[:length] for c in clips])
        else:
            context = fields["context_frames"]
        sampling = Sampling(**{k: fields[k] for k in ("seed", "temperature", "top_k", "steps", "cfg_scale")
                               if k in fields})
        return GenerateRequest(context=context, num_frames=num_frames, actions=fields.get("actions"),
                               text=fields.get("text"), sampling=sampling, resize=bool(fields.get("resize", True)))

    def generate_fields(self, fields: dict[str, Any]) -> GenerateResult:
        """Blocking: load the context, run the model. Raises :class:`BadInput` / :class:`ClipNotFound`."""
        return self.loaded_engine().generate(self.request_from_fields(fields))

    async def run(self, fields: dict[str, Any]) -> GenerateResult:
        """:meth:`generate_fields` off the event loop, with errors as KServe exceptions (400 / 500)."""
        try:
            return await asyncio.to_thread(self.generate_fields, fields)
        except (BadInput, ClipNotFound) as exc:
            raise InvalidInput(str(exc)) from None
        except InvalidInput:
            raise
        except Exception as exc:  # a model bug, not the caller's fault: 500 with the reason, logged in full
            log.exception("generation failed for %s", self.name)
            raise InferenceError(f"generation failed: {type(exc).__name__}: {exc}") from None

    def loaded_engine(self) -> WorldModelEngine:
        if self.engine is None:
            raise InferenceError(f"model {self.name} is not loaded")
        return self.engine

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        if isinstance(payload, ModelInferRequest):
            payload = InferRequest.from_grpc(payload)
        if not isinstance(payload, InferRequest):
            raise InvalidInput("this model speaks the Open Inference Protocol v2 only: POST /v2/models/"
                               f"{self.name}/infer (or gRPC ModelInfer)")
        try:
            fields = fields_from_infer_request(payload)
        except BadInput as exc:
            raise InvalidInput(str(exc)) from None
        # unbatched in, unbatched out: a [T, H, W, 3] context or a single clip id gives [N, R, R, 3]
        squeeze = (len(_input_shape(payload, "context_frames")) == 4 if "context_frames" in fields
                   else len(fields["clip_id"]) == 1 if "clip_id" in fields else False)
        result = await self.run(fields)
        frames = np.ascontiguousarray(result.frames[0] if squeeze else result.frames)
        out = InferOutput(name="frames", shape=list(frames.shape), datatype="UINT8", data=frames)
        if payload.from_grpc:  # kserve 0.21's to_grpc() cannot take ndarray data: hand it raw bytes
            out.set_data_from_numpy(frames, binary_data=True)
            out.parameters = {}
        outputs = [out]
        for name, values in (("rewards", result.rewards), ("termination_probs", result.terminations)):
            if values is None:
                continue
            arr = np.ascontiguousarray(values[0] if squeeze else values, dtype=np.float32)
            extra = InferOutput(name=name, shape=list(arr.shape), datatype="FP32", data=arr.ravel().tolist())
            if payload.from_grpc:
                extra.set_data_from_numpy(arr, binary_data=True)
                extra.parameters = {}
            outputs.append(extra)
        params = {k: (str(v) if isinstance(v, float) else "x".join(map(str, v)) if isinstance(v, list) else v)
                  for k, v in result.info.items() if v is not None}
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs,
                             parameters=params, from_grpc=payload.from_grpc,
                             use_binary_outputs=payload.use_binary_outputs)


def _input_shape(request: InferRequest, name: str) -> list[int]:
    for inp in request.inputs:
        if inp.name == name:
            return list(inp.shape)
    return []
