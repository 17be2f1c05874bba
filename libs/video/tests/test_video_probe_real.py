"""probe() against real recordings with known facts (see shared/data/README.md)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from worldloom.video import VideoInfo, probe

PSD = "video/pyscenedetect"


def test_testvideo(shared_data: Path) -> None:
    info = probe(shared_data / PSD / "testvideo.mp4")
    assert (info.width, info.height) == (1280, 720)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert info.frame_count == 720
    assert info.duration_s == pytest.approx(24.02, abs=0.05)
    assert info.codec == "h264"
    assert "mp4" in info.container
    assert info.rotation == 0
    assert info.has_audio is False and info.audio_codec is None
    assert info.pix_fmt == "yuv420p"
    assert info.start_time_s == 0.0
    assert info.size_bytes == (shared_data / PSD / "testvideo.mp4").stat().st_size
    assert info.bit_rate and info.bit_rate > 100_000


def test_counter(shared_data: Path) -> None:
    info = probe(shared_data / PSD / "counter.mp4")
    assert (info.width, info.height, info.fps, info.frame_count) == (1920, 1080, 10.0, 30)
    assert info.duration_s == pytest.approx(3.0)


def test_fades(shared_data: Path) -> None:
    info = probe(shared_data / PSD / "fades.mp4")
    assert (info.width, info.height, info.fps, info.codec) == (480, 320, 25.0, "mpeg4")
    assert info.frame_count == 250


def test_delayed_start(shared_data: Path) -> None:
    info = probe(shared_data / PSD / "delayed_start.mp4")
    assert info.start_time_s > 0
    assert info.start_time_s == pytest.approx(1.075)
    assert info.frame_count == 24


def test_rotation_metadata(shared_data: Path) -> None:
    info = probe(shared_data / PSD / "issue-134-rotate.mp4")
    # Display matrix says rotate 90 degrees clockwise (FFmpeg/PyAV report it as -90 counter-clockwise).
    assert info.rotation == 90
    assert (info.width, info.height) == (1280, 544)  # stored size, rotation not applied
    assert info.has_audio and info.audio_codec == "aac"
    assert info.fps == pytest.approx(23.976, abs=0.001)
    assert info.frame_count == 240


def test_sintel(shared_data: Path) -> None:
    info = probe(shared_data / "video" / "sintel" / "sintel_clip_10s.mp4")
    assert (info.width, info.height, info.fps, info.frame_count) == (854, 480, 24.0, 240)
    assert info.duration_s == pytest.approx(10.0, abs=0.1)


def _bridge_videos() -> list[Path]:
    # Needed at collection time, before fixtures exist; same rule as conftest.shared_data_dir().
    root = os.environ.get("WORLDLOOM_SHARED_DATA") or Path(__file__).resolve().parents[4] / "shared" / "data"
    return sorted((Path(root) / "bridge" / "videos").glob("*/*/rgb.mp4"))


@pytest.mark.parametrize("path", _bridge_videos(), ids=lambda p: "/".join(p.parts[-3:-1]))
def test_bridge_episode(path: Path) -> None:
    info = probe(path)
    assert (info.width, info.height, info.fps) == (640, 480, 3.0)
    # One robot state row per frame: an independent check that frame_count is exact.
    assert info.frame_count == np.load(path.with_name("state.npy")).shape[0]
    assert 16 <= info.frame_count <= 49


def test_bridge_data_present(shared_data: Path) -> None:
    assert len(_bridge_videos()) == 15


def test_file_object_matches_path(testvideo: Path) -> None:
    data = testvideo.read_bytes()
    buf = io.BytesIO(data)
    buf.seek(100)
    info = probe(buf)
    assert info == probe(testvideo)
    assert buf.tell() == 0  # left rewound; probe always reads from offset 0
    with testvideo.open("rb") as fh:
        assert probe(fh).frame_count == 720


def test_to_dict_roundtrip(testvideo: Path) -> None:
    info = probe(testvideo)
    d = info.to_dict()
    assert d["frame_count"] == 720 and d["rotation"] == 0
    assert VideoInfo(**d) == info
