"""Content-derived ids: the same bytes always get the same id, which makes handlers idempotent."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: an id users may send for a clip, run or other record: exactly one safe object-key segment
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def sha256_file(fileobj: BinaryIO, chunk_size: int = 1 << 20) -> tuple[str, int]:
    """Hashes a file object from its current position; returns (hex digest, bytes read)."""
    digest = hashlib.sha256()
    total = 0
    while chunk := fileobj.read(chunk_size):
        digest.update(chunk)
        total += len(chunk)
    return digest.hexdigest(), total


def is_sha256_hex(value: str) -> bool:
    return bool(_HEX64.match(value))


def is_safe_id(value: str) -> bool:
    """True for an id that can name an object-key segment as is (no separators, no leading dot)."""
    return bool(_SAFE_ID.match(value))
