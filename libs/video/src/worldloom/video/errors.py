"""The one exception callers need to catch when a video is refused."""

from __future__ import annotations

#: Codes raised by :func:`worldloom.video.probe.probe`; stable strings, safe to store or return in APIs.
REJECTION_CODES = frozenset(
    {
        "unreadable",  # path missing / not a file / permission denied
        "empty_file",
        "too_large",
        "not_a_video",
        "no_video_stream",
        "truncated",
        "bad_dimensions",
        "too_long",
        "bad_fps",
    }
)


class VideoRejected(Exception):
    """A video failed validation.

    ``code`` is a machine-readable reason (one of :data:`REJECTION_CODES`); ``reason`` is a sentence
    for humans naming the limit and the value found.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code, reason)  # args kept so the exception pickles across processes
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason}
