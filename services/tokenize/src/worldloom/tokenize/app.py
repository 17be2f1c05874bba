"""Tokenize HTTP API + the clips.curated consumer. Run with `python -m worldloom.tokenize`."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from worldloom.core import events
from worldloom.core.bus import Bus, make_bus
from worldloom.core.service import create_app
from worldloom.core.service.background import consuming
from worldloom.core.service.uploads import receive_multipart
from worldloom.core.settings import load_settings
from worldloom.core.store import ObjectStore, make_store
from worldloom.tokenize.errors import TokenizeError
from worldloom.tokenize.registry import TokenizerRecord
from worldloom.tokenize.schemas import DecodeRequest, EncodeResult, EvalResult, TokenArray, TokenizerJobRequest
from worldloom.tokenize.service import TokenizeService
from worldloom.tokenize.settings import TokenizeSettings

DESCRIPTION = """Trains causal video tokenizers (continuous latents or FSQ tokens) on curated clips with
Ray Train, keeps a registry with lineage, encodes every `clips.curated` event with the active tokenizer
into webdataset token shards (`clips.tokenized`), and encodes/decodes clips on demand."""


def build_router(svc: TokenizeService) -> APIRouter:
    router = APIRouter(prefix="/v1")
    s = svc.settings

    @router.post("/tokenizers", response_model=TokenizerRecord, status_code=202, tags=["tokenizers"],
                 summary="Train a tokenizer on a dataset manifest or a clip filter (Ray Train, in the background)")
    def create(req: TokenizerJobRequest) -> TokenizerRecord:
        return svc.jobs.create(req)

    @router.get("/tokenizers", response_model=list[TokenizerRecord], tags=["tokenizers"],
                summary="The registry: every tokenizer with state, lineage and metrics (newest first)")
    def list_all() -> list[TokenizerRecord]:
        return svc.registry.list()

    @router.get("/tokenizers/{tokenizer_id}", response_model=TokenizerRecord, tags=["tokenizers"],
                summary="Status, percent done, loss/PSNR curves, final metrics and lineage")
    def get(tokenizer_id: str) -> TokenizerRecord:
        return svc.registry.get(tokenizer_id)

    @router.delete("/tokenizers/{tokenizer_id}", response_model=TokenizerRecord, tags=["tokenizers"],
                   summary="Cancel a queued or running training job")
    def cancel(tokenizer_id: str) -> TokenizerRecord:
        return svc.jobs.cancel(tokenizer_id)

    @router.post("/tokenizers/{tokenizer_id}/activate", response_model=TokenizerRecord, tags=["tokenizers"],
                 summary="Make this tokenizer encode every clips.curated event")
    def activate(tokenizer_id: str) -> TokenizerRecord:
        return svc.activate(tokenizer_id)

    @router.post("/tokenizers:import", response_model=TokenizerRecord, status_code=201, tags=["tokenizers"],
                 summary="Register a tokenizer from an uploaded .safetensors file (multipart `file`, "
                         "optional `name`); pickles and other formats are refused")
    async def import_(request: Request) -> TokenizerRecord:
        form = await receive_multipart(request, allowed_fields=frozenset({"name"}), max_file_bytes=s.max_upload_bytes)
        try:
            return await run_in_threadpool(svc.import_checkpoint, form.file.path, form.file.filename,
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
                tid, res, q = svc.evaluate(form.file.path, form.fields.get("tokenizer_id"),
                                           _int_field(form.fields, "resolution"))
                return EvalResult(tokenizer_id=tid, psnr=q["psnr"], ssim=q["ssim"], frames=int(q["frames"]),
                                  resolution=res)
            return await run_in_threadpool(work)
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
                encoding = form.fields.get("encoding", "json")
                if encoding not in ("json", "b64"):
                    raise TokenizeError(422, "bad_field", "encoding must be 'json' or 'b64'")
                tid, enc = svc.encode(form.file.path, form.fields.get("tokenizer_id"),
                                      _int_field(form.fields, "resolution"))
                return EncodeResult(tokenizer_id=tid, kind=enc.kind, compression=svc.compression_of(tid),
                                    frames=enc.frames, resolution=enc.resolution,
                                    tokens=TokenArray.from_numpy(enc.array, encoding == "b64"))
            return await run_in_threadpool(work)
        finally:
            form.close()

    @router.post("/decode", tags=["codec"], response_model=None,
                 summary="Tokens or latents -> frames as MP4 (default), GIF, or JSON uint8 [T, H, W, 3]",
                 responses={200: {"content": {"video/mp4": {}, "image/gif": {}, "application/json": {}}}})
    def decode(req: DecodeRequest) -> Response:
        tid, frames = svc.decode(req.tokenizer_id, req.tokens.to_numpy(s.max_decode_tokens))
        if req.format == "json":
            return Response(json.dumps({"tokenizer_id": tid, "shape": list(frames.shape), "frames": frames.tolist()}),
                            media_type="application/json")
        return Response(_render(frames, req.format, req.fps), media_type="video/mp4" if req.format == "mp4"
                        else "image/gif", headers={"x-tokenizer-id": tid})

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

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc.resume()
        with consuming(bus, [events.TOPIC_CLIPS_CURATED], settings.consumer_group, svc.encoder.handle_event,
                       "tokenize-consumer", enabled=settings.consume):
            yield
        svc.close()

    limit = settings.max_upload_bytes + 64 * 1024
    app = create_app("tokenize", settings, [build_router(svc)], description=DESCRIPTION,
                     readiness={"store": store.healthy, "bus": bus.healthy}, lifespan=lifespan,
                     body_limits={("POST", "/v1/encode"): limit, ("POST", "/v1/evaluate"): limit, ("POST", "/v1/tokenizers:import"): limit,
                                  ("POST", "/v1/decode"): 64 * 1024 * 1024})
    app.state.tokenize = svc
    return app
