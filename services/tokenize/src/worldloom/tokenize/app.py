"""Tokenize HTTP API + the clips.curated consumer. Run with `python -m worldloom.tokenize`."""

from __future__ import annotations

import base64
import hashlib
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from worldloom.core import events
from worldloom.core.bus import Bus, make_bus
from worldloom.core.service import ApiError, create_app
from worldloom.core.service.uploads import receive_multipart
from worldloom.core.settings import load_settings
from worldloom.core.store import ObjectStore, make_store
from worldloom.models.tokenizer import CheckpointError, load_checkpoint, save_checkpoint
from worldloom.models.tokenizer.job import MODEL_FILE, model_key
from worldloom.tokenize.clip_encoder import ClipEncoder
from worldloom.tokenize.codec import TokenizerCache, decode_array, encode_frames, reconstruction_quality, square_frames
from worldloom.tokenize.errors import TokenizeError
from worldloom.tokenize.jobs import JobManager
from worldloom.tokenize.registry import Lineage, Registry, TokenizerRecord, TrainRequest, prefix
from worldloom.tokenize.settings import TokenizeSettings

DESCRIPTION = """Trains causal video tokenizers (continuous latents or FSQ tokens) on curated clips with
Ray Train, keeps a registry with lineage, encodes every `clips.curated` event with the active tokenizer
into webdataset token shards (`clips.tokenized`), and encodes/decodes clips on demand."""


class TokenArray(BaseModel):
    """An array as JSON: ``data`` is a nested list, or ``b64`` the raw little-endian bytes of ``dtype``."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(min_length=1, max_length=5)
    dtype: Literal["int32", "int64", "float16", "float32"]
    data: list[Any] | None = None
    b64: str | None = None

    def to_numpy(self, max_elements: int) -> np.ndarray:
        n = int(np.prod(self.shape)) if self.shape else 0
        if any(d < 1 for d in self.shape):
            raise TokenizeError(422, "bad_shape", f"every dimension must be >= 1, got {self.shape}")
        if n > max_elements:
            raise TokenizeError(413, "too_many_tokens", f"{n} values; the limit is {max_elements}")
        if (self.data is None) == (self.b64 is None):
            raise TokenizeError(422, "bad_array", "give exactly one of 'data' or 'b64'")
        try:
            if self.b64 is not None:
                raw = base64.b64decode(self.b64, validate=True)
                array = np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape)
            else:
                array = np.asarray(self.data, dtype=self.dtype).reshape(self.shape)
        except (ValueError, TypeError) as exc:
            raise TokenizeError(422, "bad_array", f"the array does not match shape {self.shape} / {self.dtype}: {exc}") from None
        return array

    @classmethod
    def from_numpy(cls, array: np.ndarray, as_b64: bool) -> TokenArray:
        dtype = str(array.dtype)
        if as_b64:
            return cls(shape=list(array.shape), dtype=dtype, b64=base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode())
        return cls(shape=list(array.shape), dtype=dtype, data=array.tolist())


class EncodeResult(BaseModel):
    tokenizer_id: str
    kind: str
    compression: str
    frames: int = Field(description="frames encoded (the longest causal length 1 + k*t that fits)")
    resolution: int
    tokens: TokenArray = Field(description="indices [t, h, w] (discrete) or latents [c, t, h, w] (continuous)")


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer_id: str | None = Field(None, description="the active tokenizer when omitted")
    tokens: TokenArray
    format: Literal["mp4", "gif", "json"] = "mp4"
    fps: float = Field(10.0, gt=0, le=120)


class EvalResult(BaseModel):
    tokenizer_id: str
    psnr: float
    ssim: float
    frames: int
    resolution: int


def _api(exc: TokenizeError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message)


class TokenizeService:
    def __init__(self, store: ObjectStore, bus: Bus, settings: TokenizeSettings) -> None:
        self.store, self.bus, self.settings = store, bus, settings
        self.registry = Registry(store)
        self.cache = TokenizerCache(store, self.registry, settings.model_cache)
        self.encoder = ClipEncoder(store, bus, self.registry, self.cache, settings.encode_max_frames)
        self.jobs = JobManager(store, settings.store, self.registry, settings, on_activate=self.start_backfill)

    def resolve(self, tokenizer_id: str | None) -> str:
        tokenizer_id = tokenizer_id or self.registry.active_id()
        if not tokenizer_id:
            raise TokenizeError(409, "no_active_tokenizer", "name a tokenizer_id or activate one first")
        return tokenizer_id

    def resolution_of(self, tokenizer_id: str, requested: int | None) -> int:
        record = self.registry.get(tokenizer_id)
        s = int(record.config.get("compression", "4x8x8").split("x")[1])
        res = requested or int((record.request or {}).get("resolution") or 64)
        if res % s or res > self.settings.encode_max_resolution or res < s:
            raise TokenizeError(422, "bad_resolution", f"resolution must be a multiple of {s} between {s} and "
                                f"{self.settings.encode_max_resolution}, got {res}")
        return res

    def import_checkpoint(self, path: Path, filename: str | None, name: str) -> TokenizerRecord:
        """Register an uploaded safetensors tokenizer; anything else (a pickle, a zip, garbage) is refused."""
        try:
            model, _ = load_checkpoint(path)  # validates the framing first, never unpickles
        except CheckpointError as exc:
            raise TokenizeError(422, "bad_checkpoint", str(exc)) from None
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        tokenizer_id = f"tok-{digest[:12]}"
        if self.registry.exists(tokenizer_id):
            return self.registry.get(tokenizer_id)
        with tempfile.TemporaryDirectory(prefix="wl-import-") as tmp:
            clean = save_checkpoint(Path(tmp) / MODEL_FILE, model)  # re-serialised: no foreign metadata
            for f in (clean, clean.with_suffix(".json")):
                with open(f, "rb") as fh:
                    self.store.put_file(f"{prefix(tokenizer_id)}/model/{f.name}", fh, f.stat().st_size)
        record = TokenizerRecord(tokenizer_id=tokenizer_id, name=name, source="imported", state="succeeded",
                                 config=model.config.to_dict(), percent=100.0,
                                 lineage=Lineage(imported_from=(filename or "upload")[:200]),
                                 model_uri=self.store.uri(model_key(prefix(tokenizer_id))))
        self.registry.save(record)
        return self.registry.get(tokenizer_id)

    def start_backfill(self, tokenizer_id: str) -> threading.Thread:
        thread = threading.Thread(target=self.encoder.backfill, args=(tokenizer_id,), name="tokenize-backfill",
                                  daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.jobs.close()


def build_router(svc: TokenizeService) -> APIRouter:
    router = APIRouter(prefix="/v1")
    s = svc.settings

    def call(fn, *args):  # noqa: ANN001, ANN202 - small adapter: TokenizeError -> ApiError
        try:
            return fn(*args)
        except TokenizeError as exc:
            raise _api(exc) from None

    @router.post("/tokenizers", response_model=TokenizerRecord, status_code=202, tags=["tokenizers"],
                 summary="Train a tokenizer on a dataset manifest or a clip filter (Ray Train, in the background)")
    def create(req: TrainRequest) -> TokenizerRecord:
        return call(svc.jobs.create, req)

    @router.get("/tokenizers", response_model=list[TokenizerRecord], tags=["tokenizers"],
                summary="The registry: every tokenizer with state, lineage and metrics (newest first)")
    def list_all() -> list[TokenizerRecord]:
        return call(svc.registry.list)

    @router.get("/tokenizers/{tokenizer_id}", response_model=TokenizerRecord, tags=["tokenizers"],
                summary="Status, percent done, loss/PSNR curves, final metrics and lineage")
    def get(tokenizer_id: str) -> TokenizerRecord:
        return call(svc.registry.get, tokenizer_id)

    @router.delete("/tokenizers/{tokenizer_id}", response_model=TokenizerRecord, tags=["tokenizers"],
                   summary="Cancel a queued or running training job")
    def cancel(tokenizer_id: str) -> TokenizerRecord:
        return call(svc.jobs.cancel, tokenizer_id)

    @router.post("/tokenizers/{tokenizer_id}/activate", response_model=TokenizerRecord, tags=["tokenizers"],
                 summary="Make this tokenizer encode every clips.curated event")
    def activate(tokenizer_id: str) -> TokenizerRecord:
        record = call(svc.registry.activate, tokenizer_id)
        svc.start_backfill(tokenizer_id)
        return record

    @router.post("/tokenizers:import", response_model=TokenizerRecord, status_code=201, tags=["tokenizers"],
                 summary="Register a tokenizer from an uploaded .safetensors file (multipart `file`, "
                         "optional `name`); pickles and other formats are refused")
    async def import_(request: Request) -> TokenizerRecord:
        form = await receive_multipart(request, allowed_fields=frozenset({"name"}), max_file_bytes=s.max_upload_bytes)
        try:
            return await run_in_threadpool(call, svc.import_checkpoint, form.file.path, form.file.filename,
                                           form.fields.get("name", "imported"))
        finally:
            form.close()

    @router.post("/evaluate", response_model=EvalResult, tags=["codec"],
                 summary="Reconstruction PSNR/SSIM of a video (multipart `file`; optional `tokenizer_id`, "
                         "`resolution`)")
    async def evaluate(request: Request) -> EvalResult:
        form = await receive_multipart(request, allowed_fields=frozenset({"tokenizer_id", "resolution"}),
                                       max_file_bytes=s.max_upload_bytes)
        try:
            def work() -> EvalResult:
                tokenizer_id = svc.resolve(form.fields.get("tokenizer_id"))
                res = svc.resolution_of(tokenizer_id, _int_field(form.fields, "resolution"))
                model = svc.cache.get(tokenizer_id)
                frames = square_frames(form.file.path, res, s.encode_max_frames)
                q = reconstruction_quality(model, frames, s.encode_max_frames)
                return EvalResult(tokenizer_id=tokenizer_id, psnr=q["psnr"], ssim=q["ssim"],
                                  frames=int(q["frames"]), resolution=res)
            return await run_in_threadpool(call, work)
        finally:
            form.close()

    @router.post("/encode", response_model=EncodeResult, tags=["codec"],
                 summary="Video (multipart `file`; optional `tokenizer_id`, `resolution`, `encoding`=json|b64) "
                         "-> tokens or latents")
    async def encode(request: Request) -> EncodeResult:
        form = await receive_multipart(request, allowed_fields=frozenset({"tokenizer_id", "resolution", "encoding"}),
                                       max_file_bytes=s.max_upload_bytes)
        try:
            def work() -> EncodeResult:
                tid = svc.resolve(form.fields.get("tokenizer_id"))
                res = svc.resolution_of(tid, _int_field(form.fields, "resolution"))
                model = svc.cache.get(tid)
                enc = encode_frames(model, square_frames(form.file.path, res, s.encode_max_frames),
                                    s.encode_max_frames)
                encoding = form.fields.get("encoding", "json")
                if encoding not in ("json", "b64"):
                    raise TokenizeError(422, "bad_field", "encoding must be 'json' or 'b64'")
                return EncodeResult(tokenizer_id=tid, kind=enc.kind, compression=model.config.compression,
                                    frames=enc.frames, resolution=enc.resolution,
                                    tokens=TokenArray.from_numpy(enc.array, encoding == "b64"))
            return await run_in_threadpool(call, work)
        finally:
            form.close()

    @router.post("/decode", tags=["codec"], response_model=None,
                 summary="Tokens or latents -> frames as MP4 (default), GIF, or JSON uint8 [T, H, W, 3]",
                 responses={200: {"content": {"video/mp4": {}, "image/gif": {}, "application/json": {}}}})
    def decode(req: DecodeRequest) -> Response:
        def work() -> Response:
            tid = svc.resolve(req.tokenizer_id)
            model = svc.cache.get(tid)
            frames = decode_array(model, req.tokens.to_numpy(s.max_decode_tokens), s.max_decode_tokens)
            if req.format == "json":
                import json as _json

                return Response(_json.dumps({"tokenizer_id": tid, "shape": list(frames.shape),
                                             "frames": frames.tolist()}), media_type="application/json")
            return Response(_render(frames, req.format, req.fps), media_type="video/mp4" if req.format == "mp4"
                            else "image/gif", headers={"x-tokenizer-id": tid})
        return call(work)

    return router


def _int_field(fields: dict[str, str], name: str) -> int | None:
    value = fields.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise TokenizeError(422, "bad_field", f"{name} must be an integer, got {value!r}") from None


def _render(frames: np.ndarray, fmt: str, fps: float) -> bytes:
    from worldloom.video.mp4_writer import frames_to_mp4
    from worldloom.video.transcode import write_gif

    with tempfile.TemporaryDirectory(prefix="wl-dec-") as tmp:
        path = Path(tmp) / f"out.{fmt}"
        if fmt == "mp4":
            frames_to_mp4(frames, path, fps)
        else:
            write_gif(frames, path, fps, max_side=max(frames.shape[1:3]))
        return path.read_bytes()


def build_app(settings: TokenizeSettings | None = None, *, store: ObjectStore | None = None,
              bus: Bus | None = None) -> FastAPI:
    settings = settings or load_settings(TokenizeSettings)
    store = store or make_store(settings.store)
    bus = bus or make_bus(settings.bus)
    svc = TokenizeService(store, bus, settings)
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker = consumer = None
        svc.jobs.resume_unfinished()
        if settings.consume:
            consumer = bus.consumer([events.TOPIC_CLIPS_CURATED], settings.consumer_group, svc.encoder.handle_event)
            worker = threading.Thread(target=consumer.run, args=(stop,), name="tokenize-consumer", daemon=True)
            worker.start()
        yield
        stop.set()
        if worker is not None:
            worker.join(10)
            consumer.close()
        svc.close()

    limit = settings.max_upload_bytes + 64 * 1024
    app = create_app("tokenize", settings, [build_router(svc)], description=DESCRIPTION,
                     readiness={"store": store.healthy, "bus": bus.healthy}, lifespan=lifespan,
                     body_limits={("POST", "/v1/encode"): limit, ("POST", "/v1/evaluate"): limit, ("POST", "/v1/tokenizers:import"): limit,
                                  ("POST", "/v1/decode"): 64 * 1024 * 1024})
    app.state.tokenize = svc
    return app
