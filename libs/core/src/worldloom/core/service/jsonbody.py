"""Bounds on untrusted JSON, checked before a parser sees it: nesting depth and number length.

``json.loads`` recurses once per level (30,000 levels: RecursionError) and converts every number
(5,000 digits: a ValueError from int(), or a huge int a route then computes with); pydantic and the
services' own walkers recurse again. One linear scan of the text, with strings blanked out first, finds
both long before any of that, for request bodies (ServiceMiddleware) and JSON form fields alike.
"""

from __future__ import annotations

import json
import re
from typing import Any

from worldloom.core.service.errors import ApiError

#: deeper than any request of the services (a curation config is 3 levels, simulator kwargs a few more)
MAX_DEPTH = 32
#: longer than any int64 or float a request carries (a seed, a threshold), far below int()'s 4,300 digits
MAX_NUMBER_CHARS = 64

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_LONG_NUMBER = re.compile(rb"[-+0-9.eE]{%d,}" % (MAX_NUMBER_CHARS + 1))


def json_problem(data: bytes | str, max_depth: int = MAX_DEPTH) -> str | None:
    """Why the JSON text exceeds a bound, or None (it may still be invalid JSON: the parser says so)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    bare = _STRING.sub(b'""', raw)
    if _LONG_NUMBER.search(bare):
        return f"it holds a number longer than {MAX_NUMBER_CHARS} characters"
    depth = 0
    for ch in _NOT_BRACKET.sub(b"", bare):
        if ch in b"[{":
            depth += 1
            if depth > max_depth:
                return f"it nests deeper than {max_depth} levels"
        else:
            depth -= 1
    return None


def loads_bounded(text: str, *, code: str, what: str) -> Any:
    """A JSON form field parsed within the bounds; ApiError(400, code) naming ``what`` otherwise."""
    problem = json_problem(text)
    if problem:
        raise ApiError(400, code, f"{what} is refused: {problem}")
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and anything else the parser refuses
        raise ApiError(400, code, f"{what} is not valid JSON: {exc}") from None
