"""The synthetic writers produce real, probe-able media with the requested properties."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from worldloom.video import probe
from worldloom.video.streams import add_video_stream
from worldloom.video.synthetic import (
    default_video_codec,
    encoder_available,
    render_frame,
    write_audio_only,
    write_random_bytes,
    write_truncated,
    write_video,
)


def test_encoders_present() -> None:
    # The project relies on these in the PyAV wheels; a failure here explains failures elsewhere.
    for name in ("libx264", "mpeg4", "aac"):
        assert encoder_available(name), name
    assert not encoder_available("no-such-codec")
    assert default_video_codec() == "libx264"


def test_an_audio_encoder_is_refused_as_a_video_stream(tmp_path: Path) -> None:
    with av.open(str(tmp_path / "v.mp4"), mode="w") as out, pytest.raises(ValueError, match="'aac' is not a video"):
        add_video_stream(out, "aac", rate=16_000)


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_write_video_roundtrip(tmp_path: Path, codec: str) -> None:
    info = probe(write_video(tmp_path / "v.mp4", 96, 64, frames=30, fps=15, codec=codec))
    assert (info.width, info.height, info.frame_count, info.fps) == (96, 64, 30, 15.0)
    assert info.codec == ("h264" if codec == "libx264" else "mpeg4")
    assert info.duration_s == pytest.approx(2.0)


def test_frames_differ(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", frames=5)
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    assert len(frames) == 5
    assert all(np.abs(a - b).mean() > 1 for a, b in itertools.pairwise(frames))


def test_patterns() -> None:
    assert not np.array_equal(render_frame(0, 32, 16), render_frame(1, 32, 16))
    assert np.array_equal(render_frame(0, 32, 16, "static"), render_frame(5, 32, 16, "static"))
    assert render_frame(3, 32, 16, "noise").shape == (16, 32, 3)
    with pytest.raises(ValueError):
        render_frame(0, 32, 16, "plaid")


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotation_roundtrip(tmp_path: Path, rotation: int) -> None:
    assert probe(write_video(tmp_path / "r.mp4", frames=3, rotation=rotation)).rotation == rotation


def test_video_with_audio_and_fractional_fps(tmp_path: Path) -> None:
    info = probe(write_video(tmp_path / "a.mp4", frames=30, fps=29.97, audio=True))
    assert info.has_audio and info.audio_codec == "aac"
    assert info.fps == pytest.approx(29.97) and info.frame_count == 30


@pytest.mark.parametrize(("suffix", "codec"), [(".mkv", "libx264"), (".webm", "libvpx")])
def test_other_containers(tmp_path: Path, suffix: str, codec: str) -> None:
    info = probe(write_video(tmp_path / f"v{suffix}", frames=12, codec=codec))
    assert info.container == "matroska,webm" and info.frame_count == 12


def test_write_helpers(tmp_path: Path) -> None:
    src = write_random_bytes(tmp_path / "r.bin", 1000, seed=1)
    assert src.stat().st_size == 1000
    assert write_random_bytes(tmp_path / "r2.bin", 1000, seed=1).read_bytes() == src.read_bytes()
    cut = write_truncated(src, tmp_path / "cut.bin", 0.25)
    assert cut.read_bytes() == src.read_bytes()[:250]
    with pytest.raises(ValueError):
        write_truncated(src, tmp_path / "x", 1.0)
    with av.open(str(write_audio_only(tmp_path / "a.m4a", seconds=0.5))) as c:
        assert not c.streams.video and c.streams.audio[0].codec_context.name == "aac"
    with pytest.raises(ValueError):
        write_video(tmp_path / "odd.mp4", 15, 16)
