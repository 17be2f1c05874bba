"""The generate model server: KServe's ``ModelServer`` (Open Inference Protocol v2 over REST, optionally
gRPC) serving the configured world models, with what KServe 0.21 lacks for us bolted on:

* **bind address**: KServe hard-codes ``0.0.0.0`` (REST, in ``RESTServer``) and ``[::]`` (gRPC);
  :class:`GenerateModelServer` builds the same servers bound to ``settings.http.host`` /
  ``settings.grpc.host`` (127.0.0.1 by default). One uvicorn worker (each worker would hold its own
  copy of every model).
* **auth**: bearer tokens (``WORLDLOOM_GENERATE_HTTP__API_TOKENS``) on every route except the probes and
  metrics (``/``, ``/metrics``, ``/v2``, ``/v2/health/live|ready``, ``/v2/models/<id>/ready``,
  ``/v1/models/<id>``), which Kubernetes and Prometheus call without a token; the same check on gRPC
  metadata for every method but ServerLive/ServerReady/ModelReady/ServerMetadata.
* **request size limit**, request ids, access logs and ``worldloom_http_*`` metrics (the platform's
  ``ServiceMiddleware``). KServe's own Prometheus metrics (``request_predict_seconds`` etc., per model)
  are on the same ``/metrics``.
* **a video route**: ``POST /v1/models/<id>:video`` takes JSON with the same fields as the v2 request
  plus ``format`` ("mp4" | "gif") and ``fps``, and answers with the video file.

KServe's routes live on its module-level FastAPI app (``kserve.model_server.app``); ours are added to that
app before KServe registers its own, so one process serves one model server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response
import grpc
from grpc import aio
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_server import app as kserve_app
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer
from pydantic import BaseModel, ConfigDict, Field

from worldloom.core.service.auth import BearerAuthMiddleware, BearerTokens
from worldloom.core.service.middleware import SecurityHeadersMiddleware, ServiceMiddleware
from worldloom.core.store import make_store
from worldloom.generate.schemas import VideoRequest
from worldloom.generate.service import BadInput
from worldloom.generate.predictor import SCALAR_FIELDS, WorldModelPredictor, scalar_field
from worldloom.generate.settings import GenerateSettings

log = logging.getLogger("worldloom.generate")

#: probes and metrics, which Kubernetes and Prometheus call without a token
PUBLIC = re.compile(r"^/(|metrics|v2|v2/health/(live|ready)|v2/models/[^/]+(/versions/[^/]+)?/ready|v1/models/[^/:]+)$")


# ----------------------------------------------------------------------------------------- video route


def _video_fields(body: VideoRequest, predictor: WorldModelPredictor) -> dict[str, Any]:
    fields: dict[str, Any] = {k: scalar_field(k, v) for k in SCALAR_FIELDS if (v := getattr(body, k)) is not None}
    if body.context_frames is not None:
        frames = body.context_frames.to_numpy()
        if frames.ndim == 5:
            if frames.shape[0] != 1:
                raise BadInput("the :video route renders one video: send one context ([T, H, W, 3])")
        else:
            frames = frames[None]
        if frames.shape[-1] != 3:
            raise BadInput(f"context_frames must be [T, H, W, 3]; got {body.context_frames.shape}")
        fields["context_frames"] = frames
    if body.clip_id is not None:
        fields["clip_id"] = [body.clip_id]
    if body.text is not None:
        fields["text"] = [body.text]
    if body.actions is not None:
        spec = predictor.loaded_engine().action_spec
        try:
            arr = np.asarray(body.actions, dtype=np.float32 if spec is not None and spec.kind == "continuous" else None)
        except (ValueError, TypeError):
            raise BadInput("actions must be a rectangular list of numbers") from None
        if arr.dtype == object:
            raise BadInput("actions must be a rectangular list of numbers")
        fields["actions"] = arr
    return fields


def _encode_video(frames: np.ndarray, fmt: str, fps: float, gif_max_side: int) -> bytes:
    from worldloom.video.mp4_writer import frames_to_mp4
    from worldloom.video.transcode import write_gif

    with tempfile.TemporaryDirectory(prefix="wl-gen-video-") as tmp:
        path = Path(tmp) / f"out.{fmt}"
        if fmt == "gif":
            write_gif(frames, path, fps, max_side=gif_max_side)
        else:
            frames_to_mp4(frames, path, fps)
        return path.read_bytes()


def add_routes(app: FastAPI, server: ModelServer, settings: GenerateSettings) -> None:
    async def video(model_name: str, body: VideoRequest) -> Response:
        """Predict frames like ``/v2/models/<id>/infer`` and answer with them as an MP4 or GIF."""
        predictor = server.registered_models.get_model(model_name)
        if not isinstance(predictor, WorldModelPredictor):
            raise ModelNotFound(model_name)
        if not predictor.ready:
            raise ModelNotReady(model_name)
        try:
            fields = _video_fields(body, predictor)
        except BadInput as exc:
            raise InvalidInput(str(exc)) from None
        result = await predictor.run(fields)
        fps = body.fps or settings.video_fps
        data = await asyncio.to_thread(_encode_video, result.frames[0], body.format, fps, settings.gif_max_side)
        headers = {"x-seed": str(result.seed), "x-frames": str(result.frames.shape[1]),
                   "x-context-frames-used": str(result.context_frames_used)}
        return Response(content=data, media_type="video/mp4" if body.format == "mp4" else "image/gif",
                        headers=headers)

    app.add_api_route("/v1/models/{model_name}:video", video, methods=["POST"], response_class=Response,
                      summary="Predicted frames as an MP4 or GIF")


# ----------------------------------------------------------------------------------------------- servers


#: gRPC methods open without a token, like their REST twins (probes and server metadata)
PUBLIC_RPCS = frozenset({"ServerLive", "ServerReady", "ModelReady", "ServerMetadata"})


class BearerAuthInterceptor(aio.ServerInterceptor):
    """The REST bearer check on gRPC metadata (``authorization: Bearer <token>``): every method but the
    probes (inference, model metadata and the model-repository load/unload) answers UNAUTHENTICATED
    without a valid token."""

    def __init__(self, tokens: BearerTokens) -> None:
        self.tokens = tokens

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.rsplit("/", 1)[-1] in PUBLIC_RPCS:
            return handler
        metadata = {k.lower(): v for k, v in (details.invocation_metadata or ())}
        problem = self.tokens.problem(metadata.get("authorization"))
        if problem is None:
            return handler

        async def deny(request: Any, context: aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)


class _BoundGRPCServer(GRPCServer):
    """KServe's gRPC server (same servicer and interceptors, plus bearer auth) listening on ``host:port``
    instead of ``[::]``."""

    def __init__(self, host: str, tokens: BearerTokens, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host, self._tokens = host, tokens

    async def start(self, max_workers: int) -> None:
        from concurrent import futures

        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(BearerAuthInterceptor(self._tokens), LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[("grpc.max_send_message_length", self._kwargs["grpc_max_send_message_length"]),
                     ("grpc.max_receive_message_length", self._kwargs["grpc_max_receive_message_length"])])
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._server.add_insecure_port(f"{host}:{self._port}")
        log.info("gRPC (Open Inference Protocol v2) on %s:%s", host, self._port)
        await self._server.start()
        await self._server.wait_for_termination()


class GenerateModelServer(ModelServer):
    """``kserve.ModelServer`` with configurable bind addresses, auth, body limits and the video route."""

    def __init__(self, settings: GenerateSettings) -> None:
        super().__init__(http_port=settings.http.port, grpc_port=settings.grpc.port, workers=1,
                         max_threads=settings.grpc.max_threads, enable_grpc=settings.grpc.enabled,
                         enable_docs_url=False, enable_latency_logging=True,
                         timeout_keep_alive=settings.timeout_keep_alive_s, grace_period=settings.grace_period_s)
        self.settings = settings
        self.bearer = BearerTokens(settings.http.tokens(), settings.http.auth_required)

    def _install(self, app: FastAPI) -> None:
        s = self.settings
        add_routes(app, self, s)
        app.add_middleware(BearerAuthMiddleware, tokens=self.bearer, public=PUBLIC)
        app.add_middleware(SecurityHeadersMiddleware)
        app.add_middleware(ServiceMiddleware, service="generate", default_limit=s.max_request_bytes)

    def start(self, models: list[Any]) -> None:  # mirrors ModelServer.start (kserve 0.21), single worker
        self._register_and_check_atleast_one_model_is_ready(models)
        self._install(kserve_app)
        self._rest_server = RESTServer(FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension,
                                       self.http_port, access_log_format=self.access_log_format, workers=1,
                                       grace_period=self.grace_period, event_loop=self.event_loop,
                                       timeout_keep_alive=self.timeout_keep_alive)
        self._rest_server.config.host = self.settings.http.host  # KServe would bind 0.0.0.0
        log.info("REST (Open Inference Protocol v2) on http://%s:%s", self.settings.http.host, self.http_port)
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            g = self.settings.grpc
            self._grpc_server = _BoundGRPCServer(
                g.host, self.bearer, self.grpc_port, self.dataplane, self.model_repository_extension,
                kwargs={"grpc_max_send_message_length": g.max_message_bytes,
                        "grpc_max_receive_message_length": g.max_message_bytes},
                grace_period=self.grace_period)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def build_predictors(settings: GenerateSettings, **kwargs: Any) -> list[WorldModelPredictor]:
    """Load every configured model; a model that fails to load stops start-up unless ``skip_unloadable``."""
    if not settings.model_ids:
        raise SystemExit("no models to serve: set WORLDLOOM_GENERATE_MODEL_IDS (comma-separated world-model ids)")
    store = make_store(settings.store)
    device = settings.resolved_device()
    predictors = []
    for model_id in dict.fromkeys(settings.model_ids):
        predictor = WorldModelPredictor(model_id, store, device=device, limits=settings.limits,
                                        default_steps=settings.default_steps,
                                        default_temperature=settings.default_temperature,
                                        preload_text=settings.preload_text_embedder, **kwargs)
        try:
            predictor.load()
        except Exception as exc:  # ModelNotFound / ModelNotReady / CheckpointError / IncompatibleModel
            if not settings.skip_unloadable:
                raise SystemExit(f"cannot serve model {model_id}: {exc}") from None
            log.error("skipping model %s: %s", model_id, exc)
            continue
        predictors.append(predictor)
    if not predictors:
        raise SystemExit("none of the configured models could be loaded")
    return predictors
