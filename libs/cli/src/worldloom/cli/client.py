"""HTTP client for the service APIs, shared by the CLI and the embedded demo."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_API = "http://127.0.0.1:8000"


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


def _multipart(path: Path, attributes: dict[str, str] | None, progress: Callable[[int], None]) -> tuple[str, int, Iterator[bytes]]:
    """Streams a multipart body from disk (no whole-file read) and reports bytes sent."""
    boundary = uuid.uuid4().hex
    name = path.name.replace('"', "_")
    head = b""
    if attributes:
        head += (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"attributes\"\r\n\r\n"
            f"{json.dumps(attributes)}\r\n"
        ).encode()
    head += (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
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


class WorldloomClient:
    def __init__(self, api: str | None = None, token: str | None = None, timeout_s: float = 600.0) -> None:
        self.api = (api or os.environ.get("WORLDLOOM_API_URL") or DEFAULT_API).rstrip("/")
        token = token if token is not None else os.environ.get("WORLDLOOM_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.api, headers=headers, timeout=timeout_s)

    def upload_video(
        self, path: Path, attributes: dict[str, str] | None = None, progress: Callable[[int], None] = lambda n: None
    ) -> dict[str, Any]:
        ctype, length, body = _multipart(path, attributes, progress)
        resp = self.http.post(
            "/v1/videos", content=body, headers={"content-type": ctype, "content-length": str(length)}
        )
        _raise_for(resp)
        return resp.json()

    def import_video(self, uri: str) -> dict[str, Any]:
        resp = self.http.post("/v1/videos:import", json={"uri": uri})
        _raise_for(resp)
        return resp.json()

    def list_videos(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        items, token = [], None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if status:
                params["status"] = status
            if token:
                params["page_token"] = token
            resp = self.http.get("/v1/videos", params=params)
            _raise_for(resp)
            page = resp.json()
            items.extend(page["items"])
            token = page.get("next_page_token")
            if not token:
                return items

    def start_gymnasium(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post("/v1/sources/gymnasium", json=body)
        _raise_for(resp)
        return resp.json()

    def source_job(self, job_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/v1/sources/jobs/{job_id}")
        _raise_for(resp)
        return resp.json()

    def search(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post("/v1/search", json=body)
        _raise_for(resp)
        return resp.json()

    def close(self) -> None:
        self.http.close()
