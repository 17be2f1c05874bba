"""Streaming multipart uploads: the file part goes straight to a temp file, hashed on the way in.

Starlette's form parser spools to a SpooledTemporaryFile through a thread hop per chunk and leaves
hashing for a second pass; for video uploads that doubles the work. Here one pass writes, hashes and
enforces the size limit, so the service can reject early and knows the content id when the body ends.
A route may take further file parts by name (``extra_files``, e.g. an episode's arrays beside its video),
each streamed to its own temp file under its own limit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from worldloom.core.scratch import scratch_prefix
from worldloom.core.service.errors import ApiError


@dataclass
class ReceivedFile:
    path: Path
    size: int
    sha256: str
    filename: str | None
    content_type: str | None


@dataclass
class ReceivedForm:
    file: ReceivedFile
    fields: dict[str, str] = field(default_factory=dict)
    extras: dict[str, ReceivedFile] = field(default_factory=dict)  # the extra_files parts, by name

    def close(self) -> None:
        for f in (self.file, *self.extras.values()):
            f.path.unlink(missing_ok=True)


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None
        self.filename: str | None = None
        self.data = bytearray()
        self.fd: int | None = None
        self.path: Path | None = None
        self.size = 0
        self.digest = hashlib.sha256()


class _ParseState:
    """What the parser's callbacks share: the part being read, its header bytes so far, and the file part
    (registered as soon as its temp file exists, so an abort can remove it)."""

    def __init__(self) -> None:
        self.part: _Part | None = None
        self.hname = bytearray()
        self.hval = bytearray()
        self.file: ReceivedFile | None = None
        self.fields: dict[str, str] = {}
        self.extras: dict[str, ReceivedFile] = {}


async def receive_multipart(
    request: Request,
    *,
    file_field: str = "file",
    allowed_fields: frozenset[str] = frozenset(),
    max_file_bytes: int,
    max_field_bytes: int = 64 * 1024,
    extra_files: frozenset[str] = frozenset(),
    max_extra_bytes: int = 0,
) -> ReceivedForm:
    """Parses multipart/form-data with one ``file_field`` part and at most one part per ``extra_files`` name
    (each up to ``max_extra_bytes``); raises ApiError with a reason on any misuse."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type", f"send multipart/form-data with a '{file_field}' part")
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "invalid_multipart", "the multipart content-type has no boundary")
    state = _ParseState()
    pending: list[bytes] = []

    def part() -> _Part:
        if state.part is None:  # python-multipart calls on_part_begin before any other part callback
            raise ApiError(400, "invalid_multipart", "malformed multipart body: data outside a part")
        return state.part

    def on_part_begin() -> None:
        state.part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.hname += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.hval += data[start:end]

    def on_header_end() -> None:
        part().headers[bytes(state.hname).lower()] = bytes(state.hval)
        state.hname, state.hval = bytearray(), bytearray()

    def on_headers_finished() -> None:
        p = part()
        _, opts = parse_options_header(p.headers.get(b"content-disposition", b""))
        if b"name" not in opts:
            raise ApiError(400, "invalid_multipart", "a form part has no name")
        p.name = opts[b"name"].decode("utf-8", "replace")
        if p.name in state.fields or p.name in state.extras:
            raise ApiError(400, "invalid_multipart", f"the form has more than one {p.name!r} part")
        if b"filename" in opts:
            if p.name != file_field and p.name not in extra_files:
                expected = f"send it as '{file_field}'" + (f" or one of {sorted(extra_files)}" if extra_files else "")
                raise ApiError(400, "unknown_field", f"file part {p.name!r} is not expected; {expected}")
            if p.name == file_field and state.file is not None:
                raise ApiError(400, "invalid_multipart", f"send exactly one '{file_field}' part")
            p.filename = opts[b"filename"].decode("utf-8", "replace")
            p.fd, name = tempfile.mkstemp(prefix=scratch_prefix("upload"))
            p.path = Path(name)
            received = ReceivedFile(p.path, 0, "", p.filename, None)  # registered early for cleanup
            if p.name == file_field:
                state.file = received
            else:
                state.extras[p.name] = received
        elif p.name not in allowed_fields:
            allowed = sorted({file_field, *allowed_fields})
            raise ApiError(400, "unknown_field", f"unknown form field {p.name!r}; allowed: {allowed}")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        p = part()
        if p.fd is not None:
            pending.append(data[start:end])
            return
        p.data += data[start:end]
        if len(p.data) > max_field_bytes:
            raise ApiError(413, "payload_too_large", f"form field {p.name!r} exceeds {max_field_bytes} bytes")

    def on_part_end() -> None:
        p = part()
        flush()
        if p.fd is not None and p.path is not None:
            os.close(p.fd)
            p.fd = None
            ctype = p.headers.get(b"content-type")
            received = ReceivedFile(p.path, p.size, p.digest.hexdigest(), p.filename,
                                    ctype.decode("latin-1") if ctype else None)
            if p.name == file_field:
                state.file = received
            else:
                state.extras[p.name or ""] = received
        else:
            state.fields[p.name or ""] = p.data.decode("utf-8", "replace")

    def flush() -> None:
        p = state.part
        if not pending or p is None or p.fd is None:
            pending.clear()
            return
        limit = max_file_bytes if p.name == file_field else max_extra_bytes
        for chunk in pending:
            p.size += len(chunk)
            if p.size > limit:
                what = "the file" if p.name == file_field else f"the {p.name!r} part"
                raise ApiError(413, "payload_too_large", f"{what} exceeds the limit of {limit} bytes")
            p.digest.update(chunk)
            os.write(p.fd, chunk)
        pending.clear()

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            flush()
        parser.finalize()
    except MultipartParseError as exc:
        _abort(state)
        raise ApiError(400, "invalid_multipart", f"malformed multipart body: {exc}") from None
    except BaseException:
        _abort(state)
        raise
    if state.file is None or not state.file.sha256:
        _abort(state)
        raise ApiError(400, "missing_file", f"the form has no complete '{file_field}' part")
    if incomplete := [name for name, f in state.extras.items() if not f.sha256]:
        _abort(state)
        raise ApiError(400, "invalid_multipart", f"the form's {incomplete[0]!r} part is incomplete")
    return ReceivedForm(state.file, state.fields, state.extras)


def _abort(state: _ParseState) -> None:
    p = state.part
    if p is not None and p.fd is not None:
        os.close(p.fd)
        p.fd = None
    for f in (state.file, *state.extras.values()):
        if f is not None:
            f.path.unlink(missing_ok=True)
