"""decode: exact frame indices (sequential and after seeks), timestamps, sizes, broken files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from worldloom.video import VideoRejected, synthetic
from worldloom.video.decode import SEEK_MIN_FRAMES, FrameReader, iter_frames, read_frames, video_fps_and_count

PSD = "video/pyscenedetect"


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the True runs in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


class CounterOCR:
    """Reads the burned-in 'Frame = N' of counter.mp4 (N is 1-based, see counter_description.txt).

    Glyphs are split at empty ink columns; the first line reads F,r,a,m,e,=,digits. Digit
    templates come from the frames that show 1..10 when decoded from the start, so reading the
    other 20 numbers (and frames reached by seeking) is a real check, not a tautology.
    """

    SIZE = (960, 540)

    def __init__(self, frames: np.ndarray) -> None:
        self.templates = {str(d): self.digits(frames[d - 1])[-1] for d in range(1, 10)}
        self.templates["0"] = self.digits(frames[9])[-1]

    @staticmethod
    def digits(gray: np.ndarray) -> list[np.ndarray]:
        ink = gray > 160
        top, bottom = runs(ink.any(axis=1))[0]
        line = ink[top:bottom]
        return [line[:, a:b] for a, b in runs(line.any(axis=0))][6:]

    @staticmethod
    def _distance(a: np.ndarray, b: np.ndarray) -> float:
        h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
        pa, pb = np.zeros((h, w), bool), np.zeros((h, w), bool)
        pa[: a.shape[0], : a.shape[1]] = a
        pb[: b.shape[0], : b.shape[1]] = b
        return float((pa ^ pb).mean())

    def read(self, gray: np.ndarray) -> int:
        glyphs = self.digits(gray)
        return int("".join(min(self.templates, key=lambda d: self._distance(g, self.templates[d])) for g in glyphs))


@pytest.fixture(scope="module")
def counter(shared_data: Path) -> Path:
    return shared_data / PSD / "counter.mp4"


@pytest.fixture(scope="module")
def counter_frames(counter: Path) -> np.ndarray:
    frames, _ = read_frames(counter, gray=True, size=CounterOCR.SIZE)
    return frames[..., 0]


@pytest.fixture(scope="module")
def ocr(counter_frames: np.ndarray) -> CounterOCR:
    return CounterOCR(counter_frames)


@pytest.fixture(scope="module")
def testvideo_small(testvideo: Path) -> list:
    return list(iter_frames(testvideo, max_side=48))


# -- exact indices ----------------------------------------------------------------------------------


def test_counter_sequential_frames_show_their_number(counter_frames: np.ndarray, ocr: CounterOCR) -> None:
    assert len(counter_frames) == 30
    assert [ocr.read(f) for f in counter_frames] == list(range(1, 31))


@pytest.mark.parametrize("start", [0, 7, 16, 17, 25, 29])
def test_counter_start_frame_shows_that_frame(counter: Path, ocr: CounterOCR, start: int) -> None:
    frames = list(iter_frames(counter, gray=True, size=CounterOCR.SIZE, start_frame=start, end_frame=start + 2))
    assert [f.index for f in frames] == [i for i in (start, start + 1) if i < 30]
    assert [ocr.read(f.image) for f in frames] == [f.index + 1 for f in frames]
    assert frames[0].pts_s == pytest.approx(start / 10)


def test_counter_step(counter: Path, ocr: CounterOCR) -> None:
    frames = list(iter_frames(counter, gray=True, size=CounterOCR.SIZE, start_frame=3, end_frame=20, step=5))
    assert [f.index for f in frames] == [3, 8, 13, 18]
    assert [ocr.read(f.image) for f in frames] == [4, 9, 14, 19]


@pytest.mark.parametrize("start", [SEEK_MIN_FRAMES, 31, 200, 485, 719])
def test_seek_matches_sequential_decode(testvideo: Path, testvideo_small: list, start: int) -> None:
    """testvideo.mp4 has keyframes at 0, 30, 180, 480: these starts really seek (B-frames too)."""
    reader = FrameReader(testvideo, max_side=48, start_frame=start, end_frame=start + 3)
    got = list(reader)
    assert reader.seeked == (start >= 30)
    assert [f.index for f in got] == list(range(start, min(start + 3, 720)))
    for f in got:
        ref = testvideo_small[f.index]
        assert np.array_equal(f.image, ref.image)
        assert f.pts_s == ref.pts_s


def _write_gop_video(path: Path, n: int, vfr: bool) -> None:
    """H.264 with a keyframe every 8 frames, B-frames and (optionally) irregular frame times."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = 8
        stream.codec_context.options = {"bf": "2", "sc_threshold": "0"}
        stream.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(synthetic.render_frame(i, 64, 48), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            t += 20 + 30 * (i % 3) if vfr else 40
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _closest_render(image: np.ndarray, index: int) -> int:
    """Which of the frames index-1..index+1 of the synthetic pattern the image shows."""
    candidates = [j for j in (index - 1, index, index + 1) if j >= 0]
    errors = [np.abs(image.astype(int) - synthetic.render_frame(j, 64, 48)).mean() for j in candidates]
    return candidates[int(np.argmin(errors))]


@pytest.mark.skipif(not synthetic.encoder_available("libx264"), reason="needs libx264")
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_seek_exact_on_variable_frame_rate(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"vfr.{ext}"
    _write_gop_video(path, 60, vfr=True)
    seq = list(iter_frames(path))
    assert len(seq) == 60
    assert all(_closest_render(f.image, f.index) == f.index for f in seq)  # content proves the index
    assert [round(f.pts_s, 3) for f in seq[:4]] == [0.0, 0.02, 0.07, 0.15]
    for start in (16, 21, 40, 59):
        reader = FrameReader(path, start_frame=start, end_frame=start + 2)
        got = list(reader)
        assert reader.seeked
        assert [f.index for f in got] == [i for i in (start, start + 1) if i < 60]
        assert all(np.array_equal(f.image, seq[f.index].image) and f.pts_s == seq[f.index].pts_s for f in got)


# -- timestamps, sizes, options ----------------------------------------------------------------------


def test_delayed_start_times_are_relative(shared_data: Path) -> None:
    frames = list(iter_frames(shared_data / PSD / "delayed_start.mp4", max_side=32))
    assert len(frames) == 24
    assert frames[0].pts_s == 0.0
    assert frames[0].pts_s_abs == pytest.approx(1.075)
    assert [f.pts_s for f in frames[:3]] == pytest.approx([0.0, 0.04, 0.08])
    assert frames[-1].pts_s == pytest.approx(23 * 0.04)


def test_sizes_and_formats(counter: Path) -> None:
    frames, pts = read_frames(counter, max_side=64, end_frame=4)
    assert frames.shape == (4, 36, 64, 3) and frames.dtype == np.uint8
    assert pts == pytest.approx([0.0, 0.1, 0.2, 0.3])
    gray, _ = read_frames(counter, gray=True, size=(40, 30), end_frame=2)
    assert gray.shape == (2, 30, 40, 1)
    one = next(iter_frames(counter, gray=True, size=(40, 30)))
    assert one.image.shape == (30, 40)
    full = next(iter_frames(counter, max_side=5000))  # never upscales
    assert full.image.shape == (1080, 1920, 3)
    empty, none = read_frames(counter, start_frame=5, end_frame=5)
    assert empty.shape[0] == 0 and none == []


def test_single_thread_and_fast_give_same_frames(counter: Path) -> None:
    a, _ = read_frames(counter, max_side=64)
    b, _ = read_frames(counter, max_side=64, threads=False)
    assert np.array_equal(a, b)
    c, _ = read_frames(counter, max_side=64, fast=True)
    assert np.abs(a.astype(int) - c).mean() < 1.0  # deblocking skipped on non-reference frames only


def test_video_fps_and_count(shared_data: Path, tmp_path: Path) -> None:
    assert video_fps_and_count(shared_data / PSD / "testvideo.mp4") == (pytest.approx(29.97, abs=0.01), 720)
    mkv = synthetic.write_video(tmp_path / "v.mkv", frames=12, fps=12)  # Matroska declares no count
    assert video_fps_and_count(mkv) == (12.0, 12)


def test_bad_arguments(counter: Path) -> None:
    with pytest.raises(ValueError):
        FrameReader(counter, max_side=64, size=(10, 10))
    with pytest.raises(ValueError):
        FrameReader(counter, step=0)
    with pytest.raises(ValueError):
        FrameReader(counter, start_frame=-1)


# -- broken and hostile files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def faststart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("broken")
    return synthetic.write_video(folder / "fs.mp4", 128, 96, 120, 24, faststart=True)


def test_truncated_stop_keeps_decodable_part(faststart: Path, tmp_path: Path) -> None:
    cut = synthetic.write_truncated(faststart, tmp_path / "cut.mp4", 0.5)
    reader = FrameReader(cut, max_side=32, on_error="stop")
    frames = list(reader)
    assert 10 < len(frames) < 120
    assert [f.index for f in frames] == list(range(len(frames)))
    assert reader.decoded_frames == len(frames)
    assert reader.error and "120" in reader.error


def test_truncated_raise_after_yielding(faststart: Path, tmp_path: Path) -> None:
    cut = synthetic.write_truncated(faststart, tmp_path / "cut.mp4", 0.5)
    seen = []
    with pytest.raises(VideoRejected) as err:
        for frame in iter_frames(cut, max_side=32):
            seen.append(frame.index)
    assert err.value.code == "truncated"
    assert seen == list(range(len(seen))) and len(seen) > 10


def test_corrupt_bytes_mid_stream(faststart: Path, tmp_path: Path) -> None:
    data = bytearray(faststart.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    reader = FrameReader(bad, max_side=32, on_error="stop")
    n = sum(1 for _ in reader)
    assert 0 < n < 120 and reader.decoded_frames == n and reader.error


def test_truncated_matroska_detected_by_time(tmp_path: Path) -> None:
    src = synthetic.write_video(tmp_path / "v.mkv", 64, 48, 120, 24)
    whole = FrameReader(src, on_error="stop")
    assert sum(1 for _ in whole) == 120 and whole.error is None
    cut = FrameReader(synthetic.write_truncated(src, tmp_path / "cut.mkv", 0.5), on_error="stop")
    assert 0 < sum(1 for _ in cut) < 120
    assert cut.error and "s of" in cut.error


def test_hostile_files_are_rejected(tmp_path: Path, faststart: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cases = {
        tmp_path / "missing.mp4": "unreadable",
        empty: "empty_file",
        synthetic.write_random_bytes(tmp_path / "noise.mp4"): "not_a_video",
        synthetic.write_audio_only(tmp_path / "tone.m4a"): "no_video_stream",
        synthetic.write_truncated(faststart, tmp_path / "head.mp4", 0.05): "truncated",
    }
    for path, code in cases.items():
        with pytest.raises(VideoRejected) as err:
            list(iter_frames(path))
        assert err.value.code == code, path.name
