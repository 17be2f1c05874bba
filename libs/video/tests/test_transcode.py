"""transcode: exact frame ranges, constant-rate output from t=0, baked-in rotation, previews."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from worldloom.testkit.media import SINTEL
from worldloom.video import probe
from worldloom.video.synthetic import write_video
from worldloom.video.transcode import (
    ClipFile,
    RenditionSpec,
    transcode_clip,
    transcode_renditions,
    write_gif,
    write_thumbnail,
)

PSD = "video/pyscenedetect"
BITS = 6  # frame index written as 6 horizontal black/white stripes


def decode(path: Path, width: int | None = None, height: int | None = None, stop: int | None = None) -> np.ndarray:
    """Frames ``[0, stop)`` decoded in order, as RGB (optionally resized): the reference cuts must match."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            if stop is not None and len(out) >= stop:
                break
            out.append(f.reformat(width=width, height=height, format="rgb24").to_ndarray())
    return np.stack(out)


def read_index(frame: np.ndarray) -> int:
    """Frame number from the stripes drawn by :func:`barcode_video` (survives crop, scale and x264)."""
    rows = np.array_split(frame.mean(axis=(1, 2)), BITS)
    return int("".join("1" if r.mean() > 128 else "0" for r in rows), 2)


@pytest.fixture(scope="module")
def barcode_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames at 20 fps, keyframe every 8, B-frames, first PTS 5 (like delayed_start.mp4)."""
    path = tmp_path_factory.mktemp("barcode") / "barcode.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=20, options={"g": "8", "bf": "2", "crf": "18"})
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        for i in range(40):
            img = np.zeros((96, 128, 3), np.uint8)
            for b, rows in enumerate(np.array_split(np.arange(96), BITS)):
                if (i >> (BITS - 1 - b)) & 1:
                    img[rows] = 255
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i + 5, Fraction(1, 20)
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    info = probe(path)
    assert info.start_time_s > 0 and info.frame_count == 40
    return path


def test_exact_range_from_mid_gop(barcode_video: Path, tmp_path: Path) -> None:
    clip = transcode_clip(barcode_video, tmp_path / "c.mp4", 13, 29)
    assert clip == ClipFile(tmp_path / "c.mp4", 128, 96, 20.0, 16, 0.8)
    info = probe(clip.path)
    assert (info.codec, info.pix_fmt, info.frame_count, info.rotation) == ("h264", "yuv420p", 16, 0)
    assert info.start_time_s == 0.0 and info.fps == 20.0 and info.duration_s == pytest.approx(0.8)
    assert [read_index(f) for f in decode(clip.path)] == list(range(13, 29))


@pytest.mark.parametrize(
    ("fps", "expected"),
    [(10, list(range(13, 29, 2))), (40, [i for i in range(13, 29) for _ in (0, 1)]), (15, [13, 14, 15, 17, 18, 19, 21, 22, 23, 25, 26, 27])],
)
def test_fps_resampling_drops_or_duplicates(barcode_video: Path, tmp_path: Path, fps: float, expected: list[int]) -> None:
    clip = transcode_clip(barcode_video, tmp_path / "c.mp4", 13, 29, fps=fps)
    assert (clip.fps, clip.frame_count) == (fps, len(expected))
    info = probe(clip.path)
    assert info.fps == pytest.approx(fps) and info.frame_count == len(expected) and info.start_time_s == 0
    assert [read_index(f) for f in decode(clip.path)] == expected


def test_renditions_share_one_decode(barcode_video: Path, tmp_path: Path) -> None:
    specs = [
        RenditionSpec(tmp_path / "preview.mp4", short_side=48),
        RenditionSpec(tmp_path / "train.mp4", square=32, fps=10, crf=18),
        RenditionSpec(tmp_path / "w.mp4", width=100),
    ]
    preview, train, wide = transcode_renditions(barcode_video, 0, 40, specs)
    assert (preview.width, preview.height, preview.frame_count) == (64, 48, 40)
    assert (train.width, train.height, train.frame_count, train.fps) == (32, 32, 20, 10.0)
    assert (wide.width, wide.height) == (100, 76)
    assert [read_index(f) for f in decode(preview.path)] == list(range(40))
    assert [read_index(f) for f in decode(train.path)] == list(range(0, 40, 2))


def test_range_clamped_and_validated(barcode_video: Path, tmp_path: Path) -> None:
    clip = transcode_clip(barcode_video, tmp_path / "end.mp4", 35, 100)
    assert [read_index(f) for f in decode(clip.path)] == [35, 36, 37, 38, 39]
    with pytest.raises(ValueError):
        transcode_clip(barcode_video, tmp_path / "x.mp4", 40, 45)
    with pytest.raises(ValueError):
        transcode_clip(barcode_video, tmp_path / "x.mp4", 5, 5)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize(("name", "start", "end"), [("counter.mp4", 10, 20), ("delayed_start.mp4", 5, 15)])
def test_real_files_cut_exactly(shared_data: Path, tmp_path: Path, name: str, start: int, end: int) -> None:
    """Each output frame is closest to the source frame with the same index (B-frames / late first PTS)."""
    src = shared_data / PSD / name
    ref = decode(src, 96, 64).astype(np.float32)
    clip = transcode_clip(src, tmp_path / "c.mp4", start, end, width=96, height=64, crf=18)
    out = decode(clip.path).astype(np.float32)
    assert len(out) == end - start and probe(clip.path).start_time_s == 0
    err = np.abs(out[:, None] - ref[None]).mean(axis=(2, 3, 4))  # [out, ref]
    assert err.argmin(axis=1).tolist() == list(range(start, end))


def test_rotation_baked_into_pixels(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / PSD / "issue-134-rotate.mp4"
    assert probe(src).rotation == 90
    clip = transcode_clip(src, tmp_path / "r.mp4", 24, 36, short_side=128)
    info = probe(clip.path)
    assert info.rotation == 0 and (info.width, info.height) == (clip.width, clip.height) == (128, 302)
    out = decode(clip.path).astype(np.float32)
    stored = decode(src, 302, 128, stop=36)[24:36].astype(np.float32)  # stored orientation, landscape
    clockwise = np.rot90(stored, k=-1, axes=(1, 2))
    counter = np.rot90(stored, k=1, axes=(1, 2))
    assert np.abs(out - clockwise).mean() < 6 < np.abs(out - counter).mean()


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_synthetic_rotations(tmp_path: Path, rotation: int) -> None:
    src = write_video(tmp_path / "s.mp4", 64, 48, frames=6, pattern="static", rotation=rotation)
    clip = transcode_clip(src, tmp_path / "o.mp4", 0, 6)
    assert probe(clip.path).rotation == 0
    expected = np.rot90(decode(src)[0].astype(np.float32), k=-rotation // 90)
    got = decode(clip.path)[0].astype(np.float32)
    assert got.shape == expected.shape and np.abs(got - expected).mean() < 4


def test_square_training_rendition_of_sintel(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / SINTEL
    clip = transcode_clip(src, tmp_path / "sq.mp4", 30, 54, square=64)
    assert (clip.width, clip.height, clip.frame_count) == (64, 64, 24)
    ref = decode(src, stop=54)[30:54]
    side = ref.shape[1]
    x0 = (ref.shape[2] - side) // 2
    centre = decode_resized(ref[:, :, x0 : x0 + side], 64)
    assert np.abs(decode(clip.path).astype(np.float32) - centre).mean() < 8


def decode_resized(frames: np.ndarray, side: int) -> np.ndarray:
    return np.stack(
        [
            av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            .reformat(width=side, height=side, interpolation="AREA")
            .to_ndarray()
            for f in frames
        ]
    ).astype(np.float32)


def test_thumbnail_jpeg_and_png(shared_data: Path, tmp_path: Path) -> None:
    frame = decode(shared_data / SINTEL, stop=41)[40]
    jpg = write_thumbnail(frame, tmp_path / "t.jpg", max_side=256)
    png = write_thumbnail(frame, tmp_path / "t.png", max_side=200)
    assert jpg.read_bytes()[:2] == b"\xff\xd8" and png.read_bytes()[:4] == b"\x89PNG"
    j, p = decode(jpg), decode(png)
    assert j.shape == (1, 144, 256, 3) and p.shape == (1, 112, 200, 3)
    small = decode_resized(frame[None, :, 187:667], 112)  # sanity: content, not garbage
    assert np.abs(p[0, :, 44:156].astype(np.float32) - small[0]).mean() < 10
    with pytest.raises(ValueError):
        write_thumbnail(frame, tmp_path / "t.bmp")


def test_gif_preview(shared_data: Path, tmp_path: Path) -> None:
    frames = decode(shared_data / SINTEL, 320, 180, stop=68)[20:68:4]
    gif = write_gif(frames, tmp_path / "p.gif", fps=8)
    assert gif.stat().st_size < 200_000
    with av.open(str(gif)) as c:
        assert c.format.name == "gif"
        out = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert out.shape == (12, 90, 160, 3)
    ref = np.stack([av.VideoFrame.from_ndarray(f, format="rgb24").reformat(160, 90).to_ndarray() for f in frames])
    assert np.abs(out.astype(np.float32) - ref).mean() < 8  # adaptive palette keeps colours close
