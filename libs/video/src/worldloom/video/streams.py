"""Output streams for PyAV containers, typed by kind."""

from __future__ import annotations

from fractions import Fraction

import av
from av.container import OutputContainer


def add_video_stream(
    container: OutputContainer, codec: str, rate: Fraction | int | None = None, options: dict[str, str] | None = None
) -> av.VideoStream:
    """``container.add_stream`` for a video encoder.

    PyAV types the stream by the codec name when it is a literal; a name chosen at run time gets the
    union of every kind, and a non-video encoder would fail only at the first frame. Here it fails at once.
    """
    stream = container.add_stream(codec, rate=rate, options=options)
    if not isinstance(stream, av.VideoStream):
        raise ValueError(f"{codec!r} is not a video encoder")
    return stream
