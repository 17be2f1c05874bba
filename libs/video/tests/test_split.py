"""split: shot detection against PySceneDetect goldens, clip spans, frame accuracy, broken files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worldloom.video import VideoRejected, synthetic
from worldloom.video.decode import iter_frames, read_frames
from worldloom.video.split import (
    ShotList,
    Span,
    SplitConfig,
    detect_shots,
    find_cuts,
    fixed_stride,
    flash_merge,
    hsv_planes,
    make_clips,
    split_video,
)

PSD = "video/pyscenedetect"


def golden_cuts(shared_data: Path, name: str, detector: str = "ContentDetector") -> list[int]:
    text = (shared_data / PSD / "goldens" / f"{name}.{detector}.default.json").read_text()
    return json.loads(text)["cuts"]


def assert_covers(spans: list[Span], n_frames: int) -> None:
    """Contiguous, non-empty, starting at 0 and ending at n_frames, times increasing."""
    assert spans[0].start_frame == 0 and spans[-1].end_frame == n_frames
    for a, b in zip(spans, spans[1:], strict=False):
        assert a.end_frame == b.start_frame and a.end_s == b.start_s
    assert all(s.n_frames > 0 and s.duration_s > 0 for s in spans)


# -- real videos -----------------------------------------------------------------------------------


def test_testvideo_matches_content_detector_goldens(shared_data: Path) -> None:
    shots = detect_shots(shared_data / PSD / "testvideo.mp4")
    golden = golden_cuts(shared_data, "testvideo.mp4")
    assert golden == [30, 180, 394]
    assert len(shots.cuts) == len(golden)
    assert max(abs(a - b) for a, b in zip(shots.cuts, golden, strict=True)) <= 1
    assert shots.error is None and shots.decoded_frames == 720
    assert_covers(shots, 720)
    assert [s.start_frame for s in shots] == [0, *shots.cuts]
    assert shots[1].start_s == pytest.approx(shots.cuts[0] * 1001 / 30000)
    assert shots[-1].end_s == pytest.approx(720 * 1001 / 30000)
    # The fade frames near the threshold stay clearly below it (PySceneDetect scores 26.9 here).
    assert shots.scores[691] < 26 and min(shots.scores[c] for c in shots.cuts) > 40


def test_fades_give_no_cuts(shared_data: Path) -> None:
    shots = detect_shots(shared_data / PSD / "fades.mp4")
    assert golden_cuts(shared_data, "fades.mp4") == [] == shots.cuts
    assert len(shots) == 1 and shots[0].n_frames == 250
    assert shots.scores.max() < 10


def test_counter_no_cuts(shared_data: Path) -> None:
    shots = detect_shots(shared_data / PSD / "counter.mp4")
    assert golden_cuts(shared_data, "counter.mp4") == [] == shots.cuts
    assert len(shots) == 1 and (shots[0].start_frame, shots[0].end_frame) == (0, 30)
    assert (shots[0].start_s, shots[0].end_s) == pytest.approx((0.0, 3.0))


def test_delayed_start_spans_start_at_zero(shared_data: Path) -> None:
    shots = detect_shots(shared_data / PSD / "delayed_start.mp4")
    assert shots.cuts == []
    assert shots[0].start_s == 0.0
    assert shots[0].end_s == pytest.approx(24 / 25)
    clips = make_clips(shots, shots.fps, min_len_s=0.2, max_len_s=0.4, trim_s=0.04)
    assert [(c.start_frame, c.end_frame) for c in clips] == [(1, 8), (8, 16), (16, 23)]
    assert [c.start_s for c in clips] == pytest.approx([0.04, 0.32, 0.64])


def test_sintel_sanity(shared_data: Path) -> None:
    """Mostly fades and one hard cut (frame 214, the only ContentDetector cut)."""
    shots = detect_shots(shared_data / "video" / "sintel" / "sintel_clip_10s.mp4")
    assert 1 <= len(shots.cuts) <= 5
    assert any(abs(c - 214) <= 1 for c in shots.cuts)
    assert_covers(shots, 240)
    assert shots[-1].end_s == pytest.approx(10.0)


def test_decode_options_keep_the_cuts(shared_data: Path) -> None:
    path = shared_data / "video" / "sintel" / "sintel_clip_10s.mp4"
    base = detect_shots(path)
    exact = detect_shots(path, SplitConfig(fast_decode=False, decode_threads=False))
    assert exact.cuts == base.cuts
    assert np.abs(exact.scores - base.scores).max() < 0.5
    wider = detect_shots(path, SplitConfig(analysis_side=96))
    assert wider.cuts == base.cuts


def test_split_video_shots_to_clips(shared_data: Path) -> None:
    config = SplitConfig(min_clip_s=2.0, max_clip_s=4.0, trim_s=0.1)
    clips = split_video(shared_data / PSD / "testvideo.mp4", config)
    assert clips.cuts == [30, 180, 394]  # analysis facts carried over
    fps = clips.fps
    assert clips and all(2.0 * fps - 1 <= c.n_frames <= 4.0 * fps + 1 for c in clips)
    assert all(3 <= c.start_frame for c in clips)  # trimmed 3 frames at the start of shot 0
    # No clip crosses a cut.
    assert all(not (c.start_frame < cut < c.end_frame) for c in clips for cut in clips.cuts)


# -- frame accuracy of spans -----------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _digit_glyphs(gray: np.ndarray) -> list[np.ndarray]:
    """Glyphs after 'Frame =' on the first text line of counter.mp4 (see test_decode.CounterOCR)."""
    ink = gray > 160
    top, bottom = _runs(ink.any(axis=1))[0]
    line = ink[top:bottom]
    return [line[:, a:b] for a, b in _runs(line.any(axis=0))][6:]


def _read_number(gray: np.ndarray, templates: dict[str, np.ndarray]) -> int:
    def dist(a: np.ndarray, b: np.ndarray) -> float:
        h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
        pa, pb = np.zeros((h, w), bool), np.zeros((h, w), bool)
        pa[: a.shape[0], : a.shape[1]], pb[: b.shape[0], : b.shape[1]] = a, b
        return float((pa ^ pb).mean())

    return int("".join(min(templates, key=lambda d: dist(g, templates[d])) for g in _digit_glyphs(gray)))


def test_counter_stride_spans_are_frame_accurate(shared_data: Path) -> None:
    path = shared_data / PSD / "counter.mp4"
    size = (960, 540)
    seq, _ = read_frames(path, gray=True, size=size)
    seq = seq[..., 0]
    templates = {str(d): _digit_glyphs(seq[d - 1])[-1] for d in range(1, 10)}  # frame i shows i + 1
    templates["0"] = _digit_glyphs(seq[9])[-1]
    clips = split_video(path, SplitConfig(method="stride", stride_clip_s=0.8, stride_s=0.7))
    assert [(c.start_frame, c.end_frame) for c in clips] == [(0, 8), (7, 15), (14, 22), (21, 29)]
    for clip in clips:
        frames = list(iter_frames(path, gray=True, size=size, start_frame=clip.start_frame, end_frame=clip.end_frame))
        assert [f.index for f in frames] == list(range(clip.start_frame, clip.end_frame))
        assert _read_number(frames[0].image, templates) == clip.start_frame + 1
        assert _read_number(frames[-1].image, templates) == clip.end_frame  # last frame = end - 1
        assert np.array_equal(frames[0].image, seq[clip.start_frame])
        assert frames[0].pts_s == pytest.approx(clip.start_s)


# -- make_clips / fixed_stride / flash_merge -------------------------------------------------------


def _span(a: int, b: int, fps: float = 10.0) -> Span:
    return Span(a, b, a / fps, b / fps)


def test_make_clips_drops_short_and_zero_length() -> None:
    spans = [_span(0, 0), _span(0, 15), _span(15, 15), _span(15, 40)]
    clips = make_clips(spans, 10.0, min_len_s=2.0, max_len_s=5.0, trim_s=0.0)
    assert [(c.start_frame, c.end_frame) for c in clips] == [(15, 40)]
    assert make_clips([], 10.0, 1.0, 2.0, 0.0) == []
    assert make_clips([_span(3, 3)], 10.0, 0.0, 2.0, 0.5) == []


def test_make_clips_trim_then_min_length() -> None:
    # 25 frames, trim 3 at each end -> 19 frames: kept for min 1.9 s, dropped for min 2.0 s.
    assert [(c.start_frame, c.end_frame) for c in make_clips([_span(10, 35)], 10.0, 1.9, 5.0, 0.3)] == [(13, 32)]
    assert make_clips([_span(10, 35)], 10.0, 2.0, 5.0, 0.3) == []
    # Trimming more than the shot length must not produce negative spans.
    assert make_clips([_span(0, 4)], 10.0, 0.0, 5.0, 0.3) == []


def test_make_clips_splits_long_shots_evenly() -> None:
    clips = make_clips([_span(0, 105)], 10.0, min_len_s=2.0, max_len_s=5.0, trim_s=0.0)
    lengths = [c.n_frames for c in clips]
    assert len(clips) == 3 and sum(lengths) == 105 and max(lengths) - min(lengths) <= 1
    assert all(n <= 50 for n in lengths)
    assert clips[0].start_frame == 0 and clips[-1].end_frame == 105
    assert all(a.end_frame == b.start_frame for a, b in zip(clips, clips[1:], strict=False))
    exact = make_clips([_span(0, 100)], 10.0, 2.0, 5.0, 0.0)
    assert [(c.start_frame, c.end_frame) for c in exact] == [(0, 50), (50, 100)]


def test_make_clips_when_even_pieces_would_be_too_short() -> None:
    # 60 frames, max 4 s, min 3.5 s: two pieces of 3 s are too short -> one 4 s clip, centred.
    clips = make_clips([_span(0, 60)], 10.0, min_len_s=3.5, max_len_s=4.0, trim_s=0.0)
    assert [(c.start_frame, c.end_frame) for c in clips] == [(10, 50)]


def test_make_clips_interpolates_times_inside_a_shot() -> None:
    shot = Span(100, 200, 5.0, 9.0)  # times from pts, not frame / fps
    clips = make_clips([shot], 25.0, 1.0, 2.0, 0.0)
    assert [(c.start_frame, c.end_frame) for c in clips] == [(100, 150), (150, 200)]
    assert [t for c in clips for t in (c.start_s, c.end_s)] == pytest.approx([5.0, 7.0, 7.0, 9.0])


def test_make_clips_validates() -> None:
    with pytest.raises(ValueError):
        make_clips([_span(0, 10)], 10.0, 3.0, 2.0, 0.0)
    with pytest.raises(ValueError):
        make_clips([_span(0, 10)], 0.0, 1.0, 2.0, 0.0)


def test_fixed_stride() -> None:
    spans = fixed_stride(100, 10.0, clip_len_s=3.0, stride_s=2.0)
    assert [(s.start_frame, s.end_frame) for s in spans] == [(0, 30), (20, 50), (40, 70), (60, 90)]
    assert spans[1].start_s == 2.0 and spans[1].end_s == 5.0
    assert fixed_stride(20, 10.0, 3.0, 3.0) == []
    ntsc = fixed_stride(100_000, 30000 / 1001, clip_len_s=10.0, stride_s=10.0)
    assert ntsc[-1].start_s == pytest.approx((len(ntsc) - 1) * 10.0, abs=1 / 29.97)  # no drift
    with pytest.raises(ValueError):
        fixed_stride(10, 10.0, 0.0, 1.0)


def test_flash_merge_like_pyscenedetect() -> None:
    above = np.zeros(100, bool)
    above[[10, 40, 45, 80]] = True
    # 10: too close to the start; 40: cut; 45: too close to 40 -> merge (needs a run >= 15 frames to
    # emit) ; 80 ends the merge run 45..80 -> emitted when a quiet frame 15 later arrives (95).
    assert flash_merge(above, 15) == [40, 80]
    assert flash_merge(above, 0) == [10, 40, 45, 80]
    assert flash_merge(np.zeros(0, bool), 15) == []


def test_hsv_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    rgb = np.random.default_rng(0).integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    rgb[0, 0] = 0  # black
    rgb[0, 1] = 128  # grey: hue 0, saturation 0
    ours = hsv_planes(rgb)
    ref = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2HSV).reshape(-1, 3).T for im in rgb])
    assert np.array_equal(ours, ref)


# -- synthetic content, options, broken files ------------------------------------------------------


def test_continuous_change_is_not_a_cut(tmp_path: Path) -> None:
    """Every noise frame scores far above the threshold, but a cut needs a quiet run before it."""
    shots = detect_shots(synthetic.write_video(tmp_path / "n.mp4", 64, 48, 60, 24, pattern="noise"))
    assert shots.scores[1:].min() > 40 and shots.cuts == []
    assert_covers(shots, 60)


def test_find_cuts_adaptive_gate() -> None:
    scores = np.full(100, 2.0)
    scores[30] = 60.0  # isolated spike: a cut either way
    scores[60:75] = 25.0  # fast camera motion ...
    scores[67] = 40.0  # ... with one frame over the threshold
    assert find_cuts(scores) == [30, 67]
    assert find_cuts(scores, SplitConfig(min_ratio=2.0)) == [30]
    assert find_cuts(scores, SplitConfig(threshold=70.0)) == []


def test_static_video_single_shot(tmp_path: Path) -> None:
    path = synthetic.write_video(tmp_path / "s.mp4", 64, 48, 30, 24, pattern="static")
    shots = detect_shots(path)
    assert shots.cuts == [] and len(shots) == 1 and shots.scores.max() < 1.0


def test_split_config_validation() -> None:
    with pytest.raises(ValueError):
        SplitConfig(method="scenes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SplitConfig(min_clip_s=5.0, max_clip_s=2.0)
    with pytest.raises(ValueError):
        SplitConfig(weights=(0.0, 0.0, 0.0))


def test_broken_mid_stream_returns_decodable_part(tmp_path: Path) -> None:
    src = synthetic.write_video(tmp_path / "fs.mp4", 128, 96, 120, 24, faststart=True)
    cut = synthetic.write_truncated(src, tmp_path / "cut.mp4", 0.5)
    shots = detect_shots(cut)
    assert isinstance(shots, ShotList)
    assert 10 < shots.decoded_frames < 120 and shots.expected_frames == 120
    assert shots.error and "120" in shots.error
    assert_covers(shots, shots.decoded_frames)
    clips = split_video(cut, SplitConfig(min_clip_s=0.5, max_clip_s=1.0, trim_s=0.0))
    assert clips.error == shots.error and all(c.end_frame <= shots.decoded_frames for c in clips)

    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 3000] = bytes(3000)
    zeroed = tmp_path / "zeroed.mp4"
    zeroed.write_bytes(bytes(data))
    shots = detect_shots(zeroed)
    assert 0 < shots.decoded_frames < 120 and shots.error
    assert_covers(shots, shots.decoded_frames)


def test_clean_file_reports_no_error(tmp_path: Path) -> None:
    shots = detect_shots(synthetic.write_video(tmp_path / "ok.mp4", 64, 48, 40, 24))
    assert shots.error is None and shots.decoded_frames == shots.expected_frames == 40
    assert_covers(shots, 40)


def test_unusable_files_raise(tmp_path: Path) -> None:
    src = synthetic.write_video(tmp_path / "fs.mp4", 128, 96, 60, 24, faststart=True)
    cases = {
        synthetic.write_random_bytes(tmp_path / "x.mp4"): "not_a_video",
        synthetic.write_truncated(src, tmp_path / "head.mp4", 0.05): "truncated",
        tmp_path / "missing.mp4": "unreadable",
    }
    for path, code in cases.items():
        with pytest.raises(VideoRejected) as err:
            detect_shots(path)
        assert err.value.code == code
