"""descriptors: levels, colour names and camera motion from synthetic pans/zooms and real clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worldloom.testkit.media import SINTEL
from worldloom.testkit.media import SINTEL_SHOTS as SHOTS
from worldloom.testkit.media import frames_of as decode
from worldloom.video.synthetic import pan_crops, scene_image
from worldloom.video.descriptors import (
    CAMERA_MOTIONS,
    Descriptors,
    brightness_level,
    camera_motion,
    colour_shares,
    describe,
    global_motion,
    motion_gray,
    motion_level,
    phase_correlate,
)
from worldloom.video.phash import resize_area


def scene(seed: int = 0, h: int = 360, w: int = 480) -> np.ndarray:
    return scene_image(seed, h, w, rects=300)


window = pan_crops


def zoom(img: np.ndarray, n: int, rate: float, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Centre crops shrinking by ``rate`` per frame, resized to ``size``: zooming in when rate > 0."""
    h, w = size
    out = []
    for i in range(n):
        s = (1 + rate) ** i
        ch, cw = round(2 * h / s), round(2 * w / s)
        y0, x0 = (img.shape[0] - ch) // 2, (img.shape[1] - cw) // 2
        out.append(resize_area(img[y0 : y0 + ch, x0 : x0 + cw], h, w).round().astype(np.uint8))
    return np.stack(out)


def test_phase_correlation_finds_shift() -> None:
    img = scene()[..., 1].astype(np.float32)
    dx, dy, peak = phase_correlate(img[100:196, 100:228], img[97:193, 105:233])  # content moves left 5, down 3
    assert (dx, dy) == (pytest.approx(-5, abs=0.2), pytest.approx(3, abs=0.2)) and peak > 0.5


@pytest.mark.parametrize(
    ("offsets", "label"),
    [
        ([(2 * i, 0) for i in range(16)], "pan right"),
        ([(-2 * i, 0) for i in range(16)], "pan left"),
        ([(0, -2 * i) for i in range(16)], "tilt up"),
        ([(0, 2 * i) for i in range(16)], "tilt down"),
        ([(0, 0)] * 16, "static"),
        ([(i // 4, 0) for i in range(16)], "static"),  # 3 px over the clip: below the 5% threshold
    ],
)
def test_synthetic_pans(offsets: list[tuple[int, int]], label: str) -> None:
    d = describe(window(scene(), offsets), fps=8)
    assert d.camera_motion == label
    if label.startswith("pan"):
        assert d.pan_x == pytest.approx(-offsets[-1][0] / 128, abs=0.01)  # content moves against the camera


@pytest.mark.parametrize(("rate", "label"), [(0.03, "zoom in"), (-0.03, "zoom out")])
def test_synthetic_zoom(rate: float, label: str) -> None:
    d = describe(zoom(scene(1), 16, rate), fps=8)
    assert d.camera_motion == label
    assert d.zoom == pytest.approx(15 * np.log1p(rate), abs=0.1)


def test_synthetic_shake_is_handheld() -> None:
    rng = np.random.default_rng(5)
    frames = window(scene(2), [tuple(o) for o in rng.integers(-5, 6, (24, 2))])
    assert describe(frames, fps=8).camera_motion == "handheld"


def test_moving_object_is_not_camera_motion() -> None:
    """A large object moving over a still background (like the robot arm) leaves the camera static."""
    frames = window(scene(3), [(0, 0)] * 16).copy()
    for i, f in enumerate(frames):
        f[20:70, 4 * i : 4 * i + 40] = (250, 40, 40)
    gm = global_motion(motion_gray(frames))
    assert camera_motion(gm) == "static"
    assert describe(frames, fps=8).motion in ("slow", "moderate")


def test_levels_and_colours() -> None:
    assert [brightness_level(v) for v in (10, 100, 220)] == ["dark", "normal", "bright"]
    assert [motion_level(v) for v in (0.1, 1, 5, 20)] == ["static", "slow", "moderate", "fast"]
    frames = np.zeros((4, 48, 64, 3), np.uint8)
    frames[:, :, :40] = (30, 60, 200)  # blue
    frames[:, :, 40:56] = (245, 245, 245)  # white
    frames[:, :, 56:] = (128, 128, 128)  # grey
    shares = colour_shares(frames)
    assert list(shares) == ["blue", "white", "grey"] and shares["blue"] == pytest.approx(40 / 64, abs=0.02)
    d = describe(frames, fps=4)
    assert d.colours == ["blue", "white", "grey"] and d.motion == "static" and d.camera_motion == "static"
    assert d.caption() == "a normal, static shot with a static camera; dominant colours: blue, white, grey"
    assert d.tags() == ["normal", "static motion", "camera: static", "blue", "white", "grey"]
    named = {
        "red": (200, 20, 20), "orange": (240, 140, 20), "yellow": (230, 220, 30), "green": (30, 180, 40),
        "cyan": (30, 200, 210), "purple": (130, 40, 200), "pink": (240, 80, 180), "brown": (120, 70, 30),
        "black": (5, 5, 5),
    }  # fmt: skip
    for name, rgb in named.items():
        assert list(colour_shares(np.full((1, 8, 8, 3), rgb, np.uint8))) == [name]


def test_caption_wording() -> None:
    d = Descriptors("bright", "slow", "pan left", ["blue", "white"], 200.0, 2.0)
    assert d.caption() == "a bright, slow-moving shot with the camera panning left; dominant colours: blue, white"
    d = Descriptors("dark", "fast", "zoom in", [], 20.0, 20.0)
    assert d.caption() == "a dark, fast-moving shot with the camera zooming in"
    assert set(CAMERA_MOTIONS) >= {"static", "handheld", "tilt up", "zoom out"}


def test_real_footage(shared_data: Path) -> None:
    sintel = decode(shared_data / SINTEL)
    snow = describe(sintel[slice(*SHOTS["snow"], 3)], fps=8)
    assert snow.brightness == "normal" and snow.colours[0] == "grey" and snow.motion != "static"
    man = describe(sintel[slice(*SHOTS["man"], 3)], fps=8)
    assert man.brightness == "dark" and "brown" in man.colours
    # Bridge episodes are filmed by a fixed camera while the arm moves.
    for p in sorted((shared_data / "bridge" / "videos").glob("*/*/rgb.mp4")):
        d = describe(decode(p, 96), fps=3)
        assert d.camera_motion == "static" and d.brightness == "normal" and d.motion != "static", (p, d)
