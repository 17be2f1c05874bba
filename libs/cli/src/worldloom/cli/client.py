"""HTTP client for the service APIs, shared by the CLI and the embedded demo."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx


class ApiFailure(Exception):
    """A non-2xx answer, carrying the service's error code and message for the user."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _raise_for(resp: httpx.Response) -> None:
    if resp.is_success:
        return
    try:
        err = resp.json()["error"]
        raise ApiFailure(resp.status_code, err.get("code", "error"), err.get("message", resp.text))
    except (ValueError, KeyError, TypeError):
        raise ApiFailure(resp.status_code, "http_error", resp.text[:500]) from None


def _multipart(path: Path, fields: dict[str, str] | None, progress: Callable[[int], None],
               parts: dict[str, tuple[str, bytes]] | None = None) -> tuple[str, int, Iterator[bytes]]:
    """Streams a multipart body from disk (no whole-file read) and reports bytes sent: the text
    ``fields`` first, then small file ``parts`` (name -> (file name, bytes), e.g. an episode's arrays),
    then the ``file`` part."""
    boundary = uuid.uuid4().hex
    head = b""
    for key, value in (fields or {}).items():
        head += (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n"
            f"{value}\r\n"
        ).encode()
    for key, (filename, data) in (parts or {}).items():
        head += (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"; filename=\"{_safe(filename)}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + data + b"\r\n"
    head += (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{_safe(path.name)}\"\r\n"
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    def body() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                progress(len(chunk))
                yield chunk
        yield tail

    return f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail), body()


def _safe(name: str) -> str:
    return name.replace('"', "_").replace("\r", "_").replace("\n", "_")


def _quote(segment: str) -> str:
    """One URL path segment (an id typed by the user must not walk to another route)."""
    return quote(segment, safe="")


class WorldloomClient:
    """One service at ``api`` (a base URL; the CLI resolves it per service, see :mod:`worldloom.cli.config`),
    authenticated with ``token`` when given. The methods are grouped by the service that answers them."""

    def __init__(self, api: str, token: str | None = None, timeout_s: float = 600.0) -> None:
        self.api = api.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.api, headers=headers, timeout=timeout_s)

    def upload_video(
        self, path: Path, attributes: dict[str, str] | None = None, progress: Callable[[int], None] = lambda n: None,
        arrays: dict[str, tuple[str, bytes]] | None = None,
    ) -> dict[str, Any]:
        """Uploads a video, with an episode's ``arrays`` (part -> (file name, .npy/JSON/safetensors bytes))."""
        fields = {"attributes": json.dumps(attributes)} if attributes else None
        return self._post_file("/v1/videos", path, fields, progress, arrays)

    def _call(self, method: str, route: str, **kwargs: Any) -> Any:
        """One request; the JSON answer, or :class:`ApiFailure` with the service's error code."""
        resp = self.http.request(method, route, **kwargs)
        _raise_for(resp)
        return resp.json()

    def _post_file(self, route: str, path: Path, fields: dict[str, str] | None,
                   progress: Callable[[int], None] = lambda n: None,
                   parts: dict[str, tuple[str, bytes]] | None = None) -> dict[str, Any]:
        ctype, length, body = _multipart(path, fields, progress, parts)
        return self._call("POST", route, content=body, headers={"content-type": ctype, "content-length": str(length)})

    def import_video(self, uri: str) -> dict[str, Any]:
        return self._call("POST", "/v1/videos:import", json={"uri": uri})

    def list_videos(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        items, token = [], None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if status:
                params["status"] = status
            if token:
                params["page_token"] = token
            page = self._call("GET", "/v1/videos", params=params)
            items.extend(page["items"])
            token = page.get("next_page_token")
            if not token:
                return items

    def start_gymnasium(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/sources/gymnasium", json=body)

    def source_job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/sources/jobs/{job_id}")

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/search", json=body)

    def create_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        """Saves a dataset version on the search service (a DatasetRequest: clip ids or a query); the manifest."""
        return self._call("POST", "/v1/datasets", json=body)

    # ---- tokenize service

    def train_tokenizer(self, body: dict[str, Any]) -> dict[str, Any]:
        """Starts a tokenizer training job (a TokenizerJobRequest); the answer is the queued TokenizerRecord."""
        return self._call("POST", "/v1/tokenizers", json=body)

    def list_tokenizers(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/tokenizers")

    def tokenizer(self, tokenizer_id: str) -> dict[str, Any]:
        """State, percent, step, ETA, loss/PSNR curves, metrics and lineage of one tokenizer."""
        return self._call("GET", f"/v1/tokenizers/{_quote(tokenizer_id)}")

    def cancel_tokenizer(self, tokenizer_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/tokenizers/{_quote(tokenizer_id)}")

    def activate_tokenizer(self, tokenizer_id: str) -> dict[str, Any]:
        """Makes it encode clips.curated events; the service also backfills every accepted clip."""
        return self._call("POST", f"/v1/tokenizers/{_quote(tokenizer_id)}/activate")

    # ---- train service

    def train_world_model(self, body: dict[str, Any]) -> dict[str, Any]:
        """Starts a world-model training job (a WorldModelJobRequest); the answer is the queued WorldModelRecord."""
        return self._call("POST", "/v1/jobs", json=body)

    def posttrain(self, body: dict[str, Any]) -> dict[str, Any]:
        """Starts a post-training job (a PosttrainRequest) on the posttrain service; the queued record."""
        return self._call("POST", "/v1/jobs", json=body)

    def world_job(self, model_id: str) -> dict[str, Any]:
        """State, percent, step, ETA, loss/throughput curves, metrics and lineage of one training job."""
        return self._call("GET", f"/v1/jobs/{_quote(model_id)}")

    def list_world_jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/jobs")

    def cancel_world_job(self, model_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/jobs/{_quote(model_id)}")

    # ---- rlsim service

    def start_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Starts an RL experiment (an ExperimentRequest); the answer is the queued ExperimentRecord."""
        return self._call("POST", "/v1/experiments", json=body)

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        """State, percent, real steps used, learning curves and metrics of one experiment."""
        return self._call("GET", f"/v1/experiments/{_quote(experiment_id)}")

    def cancel_experiment(self, experiment_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/experiments/{_quote(experiment_id)}")

    def policies(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/policies")

    def policy(self, policy_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/policies/{_quote(policy_id)}")

    def evaluate_policy(self, policy_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Real episodes on unseen seeds: returns, lengths and the video's key and URL path."""
        return self._call("POST", f"/v1/policies/{_quote(policy_id)}/evaluate", json=body)

    def download(self, route: str) -> bytes:
        """The raw bytes at ``route`` (e.g. an evaluation's video)."""
        resp = self.http.get(route)
        _raise_for(resp)
        return resp.content

    def import_tokenizer(self, path: Path, name: str | None = None) -> dict[str, Any]:
        return self._post_file("/v1/tokenizers:import", path, {"name": name} if name else None)

    def evaluate_video(self, path: Path, tokenizer_id: str | None = None, resolution: int | None = None) -> dict[str, Any]:
        """Reconstruction PSNR/SSIM of a local video (the active tokenizer when ``tokenizer_id`` is None)."""
        return self._post_file("/v1/evaluate", path, _codec_fields(tokenizer_id, resolution))

    def encode_video(self, path: Path, tokenizer_id: str | None = None, resolution: int | None = None,
                     encoding: str = "json") -> dict[str, Any]:
        """A local video -> tokens or latents (``encoding`` "json": nested lists, "b64": raw bytes)."""
        fields = _codec_fields(tokenizer_id, resolution)
        fields["encoding"] = encoding
        return self._post_file("/v1/encode", path, fields)

    def decode_tokens(self, tokens: dict[str, Any], tokenizer_id: str | None = None, fmt: str = "json",
                      fps: float = 10.0) -> Any:
        """Tokens/latents -> frames: the JSON document for ``fmt`` "json", else the mp4/gif bytes."""
        body: dict[str, Any] = {"tokens": tokens, "format": fmt, "fps": fps}
        if tokenizer_id:
            body["tokenizer_id"] = tokenizer_id
        resp = self.http.post("/v1/decode", json=body)
        _raise_for(resp)
        return resp.json() if fmt == "json" else resp.content

    # ---- generate service (KServe model server)

    def model_status(self, model_id: str) -> dict[str, Any]:
        """KServe's ``GET /v1/models/<id>``: ``{"name", "ready"}`` (404 for a model it does not serve)."""
        resp = self.http.get(f"/v1/models/{_quote(model_id)}")
        _raise_for_generate(resp, model_id)
        return resp.json()

    def infer(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Open Inference Protocol v2 ``POST /v2/models/<id>/infer`` with a JSON body; the JSON answer."""
        resp = self.http.post(f"/v2/models/{_quote(model_id)}/infer", json=body)
        _raise_for_generate(resp, model_id)
        return resp.json()

    def generate_video(self, model_id: str, body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """``POST /v1/models/<id>:video`` (a VideoRequest): the MP4/GIF bytes and the response headers
        (``x-seed``, ``x-frames``, ``x-context-frames-used``)."""
        resp = self.http.post(f"/v1/models/{_quote(model_id)}:video", json=body)
        _raise_for_generate(resp, model_id)
        return resp.content, dict(resp.headers)

    def __enter__(self) -> WorldloomClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()


_GENERATE_CODES = {400: "bad_input", 401: "unauthorized", 403: "forbidden", 404: "model_not_found",
                   413: "too_large", 422: "bad_request", 500: "generation_failed", 503: "model_not_ready"}


def _raise_for_generate(resp: httpx.Response, model_id: str) -> None:
    """The generate server (KServe) answers errors as ``{"error": "reason"}``, its own middleware as
    ``{"error": {"code", "message"}}`` and request validation as ``{"detail": [...]}``: one ApiFailure."""
    if resp.is_success:
        return
    code = _GENERATE_CODES.get(resp.status_code, "http_error")
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    message = resp.text[:500] or resp.reason_phrase
    if isinstance(doc, dict):
        err, detail = doc.get("error"), doc.get("detail")
        if isinstance(err, dict):
            code, message = err.get("code", code), err.get("message", message)
        elif isinstance(err, str):
            message = err
        elif isinstance(detail, list):
            message = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'body'}: {d.get('msg', d)}"
                                if isinstance(d, dict) else str(d) for d in detail)
        elif detail is not None:
            message = str(detail)
    if resp.status_code == 404 and code == "model_not_found":
        message = f"the generate server does not serve model {model_id!r} ({message})"
    raise ApiFailure(resp.status_code, code, message)


def _codec_fields(tokenizer_id: str | None, resolution: int | None) -> dict[str, str]:
    fields = {}
    if tokenizer_id:
        fields["tokenizer_id"] = tokenizer_id
    if resolution:
        fields["resolution"] = str(resolution)
    return fields
