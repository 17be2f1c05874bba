"""Every VideoRejected code, each triggered by a small synthetic bad file."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import pytest

from worldloom.video import REJECTION_CODES, VideoLimits, VideoRejected, probe
from worldloom.video.synthetic import write_audio_only, write_random_bytes, write_truncated, write_video


def _rejects(path: Path | io.BytesIO, code: str, limits: VideoLimits | None = None) -> VideoRejected:
    with pytest.raises(VideoRejected) as exc_info:
        probe(path, limits) if limits else probe(path)
    err = exc_info.value
    assert err.code == code, str(err)
    assert err.code in REJECTION_CODES
    assert err.reason and err.reason[0].isupper() and err.reason.endswith(".")
    return err


def test_missing_file(tmp_path: Path) -> None:
    _rejects(tmp_path / "nope.mp4", "unreadable")
    _rejects(tmp_path, "unreadable")  # a directory


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    _rejects(tmp_path / "empty.mp4", "empty_file")
    _rejects(io.BytesIO(b""), "empty_file")


def test_too_large_checked_before_opening(tmp_path: Path) -> None:
    # Random bytes would be 'not_a_video' if opened: too_large proves the size check comes first.
    path = write_random_bytes(tmp_path / "big.mp4", 5000)
    err = _rejects(path, "too_large", VideoLimits(max_bytes=1000))
    assert "max_bytes=1000" in err.reason and "5000" in err.reason


@pytest.mark.parametrize("n", [16, 1000, 100_000])
def test_random_bytes(tmp_path: Path, n: int) -> None:
    _rejects(write_random_bytes(tmp_path / "random.mp4", n, seed=n), "not_a_video")


def test_text_file(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    _rejects(tmp_path / "notes.mp4", "not_a_video")


def test_truncated_real_mp4(tmp_path: Path, testvideo: Path) -> None:
    # testvideo.mp4 keeps its index (moov) at the end, so half a file cannot even be opened.
    err = _rejects(write_truncated(testvideo, tmp_path / "half.mp4", 0.5), "truncated")
    assert "MP4" in err.reason


def test_truncated_faststart_mp4_missing_frames(tmp_path: Path) -> None:
    # Index first: the file opens, declares 48 frames, but the data for most of them is gone.
    src = write_video(tmp_path / "fast.mp4", frames=48, faststart=True)
    err = _rejects(write_truncated(src, tmp_path / "cut.mp4", 0.6), "truncated")
    assert "declares 48 frames" in err.reason


def test_undecodable_first_frame(tmp_path: Path) -> None:
    path = write_video(tmp_path / "zeroed.mp4", frames=24, faststart=True)
    data = bytearray(path.read_bytes())
    at = data.index(b"mdat") - 4
    (size,) = struct.unpack(">I", data[at : at + 4])
    data[at + 8 : at + size] = bytes(size - 8)  # wipe every compressed frame, keep the index
    path.write_bytes(bytes(data))
    err = _rejects(path, "truncated")
    assert "decoded" in err.reason


def test_audio_only(tmp_path: Path) -> None:
    for name in ("tone.m4a", "tone.mp4"):
        err = _rejects(write_audio_only(tmp_path / name), "no_video_stream")
        assert "aac" in err.reason


def test_too_small(tmp_path: Path) -> None:
    err = _rejects(write_video(tmp_path / "tiny.mp4", 8, 8, frames=4), "bad_dimensions")
    assert "8x8" in err.reason and "min_side=16" in err.reason


def test_absurd_aspect_ratio(tmp_path: Path) -> None:
    err = _rejects(write_video(tmp_path / "sliver.mp4", 16, 2048, frames=4), "bad_dimensions")
    assert "16x2048" in err.reason and "max_aspect_ratio" in err.reason


def test_too_large_dimensions(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", 64, 48, frames=4)
    err = _rejects(path, "bad_dimensions", VideoLimits(max_width=32, max_height=32, min_side=16))
    assert "64x48" in err.reason
    # Orientation-agnostic: a portrait video fits a landscape bound.
    assert probe(write_video(tmp_path / "p.mp4", 48, 64, frames=4), VideoLimits(max_width=64, max_height=48))


def test_too_long(tmp_path: Path) -> None:
    path = write_video(tmp_path / "two_s.mp4", frames=48, fps=24)
    err = _rejects(path, "too_long", VideoLimits(max_duration_s=1))
    assert "max_duration_s=1" in err.reason and "2.00 s" in err.reason


def test_too_many_frames(tmp_path: Path) -> None:
    err = _rejects(write_video(tmp_path / "v.mp4", frames=24), "too_long", VideoLimits(max_frames=10))
    assert "max_frames=10" in err.reason


def test_too_long_without_declared_duration(tmp_path: Path) -> None:
    # Matroska carries no per-stream frame count, so the frame limit is enforced while demuxing.
    err = _rejects(write_video(tmp_path / "v.mkv", frames=24), "too_long", VideoLimits(max_frames=10))
    assert "max_frames=10" in err.reason


def test_bad_fps(tmp_path: Path) -> None:
    err = _rejects(write_video(tmp_path / "fast.mp4", frames=10, fps=300), "bad_fps")
    assert "300.000" in err.reason and "max_fps=240" in err.reason
    _rejects(write_video(tmp_path / "v.mp4", frames=4, fps=24), "bad_fps", VideoLimits(max_fps=10))


def test_non_seekable_file_object_is_a_caller_error() -> None:
    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

    with pytest.raises(ValueError):
        probe(Pipe())  # type: ignore[arg-type]


def test_rejection_pickles_and_formats() -> None:
    err = VideoRejected("too_long", "The video lasts 9 s, over max_duration_s=1.")
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.code, clone.reason) == (err.code, err.reason)
    assert str(err) == "too_long: The video lasts 9 s, over max_duration_s=1."
    assert err.to_dict() == {"code": "too_long", "reason": err.reason}


def test_limits_validation() -> None:
    assert VideoLimits().max_bytes == 2 * 1024**3
    with pytest.raises(ValueError):
        VideoLimits(max_fps=0)
    with pytest.raises(ValueError):
        VideoLimits(max_aspect_ratio=0.5)
    with pytest.raises(ValueError):
        VideoLimits(min_side=100, max_width=64)


_PEAK_PROBE = """
import json, sys
from worldloom.video import VideoRejected, probe
from worldloom.video.decode import FrameReader
try:
    if sys.argv[2] == "probe":
        probe(sys.argv[1])
    else:
        with FrameReader(sys.argv[1], max_side=128) as reader:
            next(iter(reader))
    code = "accepted"
except VideoRejected as exc:
    code = exc.code
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"code": code, "peak_mb": peak / 1024}))
"""


@pytest.mark.parametrize("reader", ["probe", "decode"])
def test_a_decompression_bomb_is_refused_from_its_header_in_bounded_memory(tmp_path: Path, reader: str) -> None:
    """A 2 MB PNG that claims 16000x16000 16-bit RGBA (2 GB decoded), named .mp4: FFmpeg's decoders check
    the declared size against the pixel bound before allocating, in probe (ingest) and in the frame reader
    (search's image queries) alike. Measured in a fresh process: its peak resident memory."""
    import json
    import subprocess
    import sys

    from worldloom.video.synthetic import write_png_bomb

    bomb = write_png_bomb(tmp_path / "bomb.mp4")
    assert bomb.stat().st_size < 3 * 1024 * 1024
    out = subprocess.run([sys.executable, "-c", _PEAK_PROBE, str(bomb), reader], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["code"] == "bad_dimensions", result
    assert result["peak_mb"] < 400, result  # the interpreter with PyAV and numpy is ~60 MB; the image 2 GB


def test_a_small_png_is_probed_as_a_still_image(tmp_path: Path) -> None:
    from worldloom.video.synthetic import write_png_bomb

    info = probe(write_png_bomb(tmp_path / "pic.mp4", 320, 240))
    assert info.still_image and (info.width, info.height, info.frame_count) == (320, 240, 1)
    assert not probe(write_video(tmp_path / "v.mp4", frames=4)).still_image
