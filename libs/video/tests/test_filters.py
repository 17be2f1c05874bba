"""filters: default thresholds keep real footage and drop static/black/white/blurred/shaking/noise clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worldloom.testkit.media import SINTEL
from worldloom.testkit.media import SINTEL_SHOTS as SHOTS
from worldloom.testkit.media import SINTEL_TITLE_CARD as TITLE_CARD
from worldloom.testkit.media import frames_of as decode
from worldloom.video.filters import ClipScores, FilterConfig, Rejection, clip_scores, evaluate, laplacian_variance
from worldloom.video.synthetic import pan_crops, render_frame, scene_image


def scene(seed: int = 0, h: int = 300, w: int = 400) -> np.ndarray:
    return scene_image(seed, h, w, rects=250)


window = pan_crops


def box_blur(frames: np.ndarray, r: int) -> np.ndarray:
    x = frames.astype(np.float32)
    for axis in (1, 2):
        x = np.mean([np.roll(x, s, axis=axis) for s in range(-r, r + 1)], axis=0)
    return x.round().astype(np.uint8)


@pytest.fixture(scope="module")
def sintel(shared_data: Path) -> np.ndarray:
    return decode(shared_data / SINTEL)


def names(rejections: list[Rejection]) -> set[str]:
    return {r.filter for r in rejections}


@pytest.mark.parametrize("step", [1, 3])  # all 24 fps, or sampled at 8 fps
def test_sintel_shots_pass(sintel: np.ndarray, step: int) -> None:
    for shot, (a, b) in SHOTS.items():
        scores = clip_scores(sintel[a:b:step], 24 / step)
        assert evaluate(scores) == [], (shot, scores)
        assert scores.duration_s == pytest.approx((b - a) / 24, abs=0.13)


def test_sintel_title_card_is_rejected_as_black_and_static(sintel: np.ndarray) -> None:
    a, b = TITLE_CARD
    rejected = evaluate(clip_scores(sintel[a:b:3], 8))
    assert {"max_black", "min_motion"} <= names(rejected)
    black = next(r for r in rejected if r.filter == "max_black")
    assert black.value == 1.0 and black.threshold == 0.5 and "black" in black.reason


def test_bridge_episodes_pass(shared_data: Path) -> None:
    paths = sorted((shared_data / "bridge" / "videos").glob("*/*/rgb.mp4"))
    assert len(paths) == 15
    for p in paths:
        scores = clip_scores(decode(p, 96), fps=3.0)
        assert evaluate(scores) == [], (p, scores)


def test_synthetic_bad_clips_are_rejected_for_the_right_reason() -> None:
    img = scene()
    rng = np.random.default_rng(3)
    cases = {
        "static": (np.stack([render_frame(0, 128, 96, "static")] * 32), {"min_motion", "max_frozen", "min_sharpness"}),
        "black": (np.full((32, 96, 128, 3), 4, np.uint8), {"max_black", "min_motion"}),
        "white": (np.full((32, 96, 128, 3), 250, np.uint8), {"max_overexposed", "min_motion"}),
        "noise": (np.stack([render_frame(i, 128, 96, "noise") for i in range(32)]), {"max_shake"}),
        "shaking": (window(img, [tuple(o) for o in rng.integers(-6, 7, (32, 2))]), {"max_shake"}),
        "still photo": (window(img, [(0, 0)] * 32), {"min_motion", "max_frozen"}),
        "blurred pan": (box_blur(window(img, [(2 * i - 32, 0) for i in range(32)]), 3), {"min_sharpness"}),
        "too short": (window(img, [(2 * i, 0) for i in range(4)]), {"min_duration"}),
    }
    for name, (frames, expected) in cases.items():
        got = names(evaluate(clip_scores(frames, fps=8)))
        assert expected <= got, (name, got)
    good = window(img, [(2 * i - 32, i // 2) for i in range(32)])  # a sharp, smooth pan
    assert evaluate(clip_scores(good, fps=8)) == []


def test_scores_values() -> None:
    frames = np.zeros((10, 48, 64, 3), np.uint8)
    frames[5:] = 255
    s = clip_scores(frames, fps=5)
    assert isinstance(s, ClipScores) and s.frame_count == 10 and s.duration_s == 2.0
    assert s.black_fraction == 0.5 and s.overexposed_fraction == 0.5
    assert s.frozen_fraction == pytest.approx(8 / 9)
    assert s.motion_mean == pytest.approx(255 / 9, rel=0.01)
    assert s.brightness == pytest.approx(127.5, rel=0.01)
    assert clip_scores(frames, fps=5, duration_s=7.5).duration_s == 7.5
    assert set(s.to_dict()) >= {"motion_mean", "motion_shake", "sharpness", "black_fraction"}
    with pytest.raises(ValueError):
        clip_scores(frames[..., 0], fps=5)


def test_laplacian_variance_of_checkerboard() -> None:
    board = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.float32)
    assert laplacian_variance(board) == pytest.approx((4 * 255) ** 2, rel=0.01)  # Laplacian is +-1020 everywhere
    assert laplacian_variance(np.full((8, 8), 9.0)) == 0


def test_config_thresholds_and_disabling() -> None:
    s = ClipScores(0.1, 0.0, 100.0, 120.0, 0.0, 0.0, 0.0, 200.0, 10)
    r = evaluate(s)
    assert names(r) == {"min_motion", "max_duration"}
    motion = next(x for x in r if x.filter == "min_motion")
    assert (motion.value, motion.threshold) == (0.1, 0.15) and "static" in motion.reason
    assert evaluate(s, FilterConfig(min_motion=None, max_duration_s=None)) == []
    assert motion.to_dict()["filter"] == "min_motion"
