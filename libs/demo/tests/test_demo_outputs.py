"""The demo's outputs: the matplotlib training-curve and horizon plots, the side-by-side GIF grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from worldloom.demo.plots import nice_ticks, plot_training_curves


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert nice_ticks(0, 300) == [0, 100, 200, 300]
    ticks = nice_ticks(11.3, 24.7)
    assert ticks[0] <= 11.3 and ticks[-1] >= 24.7 and len(set(np.diff(ticks).round(9))) == 1
    assert len(nice_ticks(5.0, 5.0)) >= 2  # a flat curve still gets an axis


def test_psnr_plot_writes_a_png_of_the_requested_size(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    psnr = [(s, 12 + 10 * (1 - math.exp(-s / 80))) for s in range(3, 151, 3)]
    loss = [(s, 0.1 + 0.45 * math.exp(-s / 60)) for s in range(3, 151, 3)]
    path = plot_training_curves(psnr, loss, tmp_path / "curves.png", title="t", size=(640, 360), val_psnr=19.5)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (640, 360)
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels[::7]}
    assert (31, 119, 180) in colours and (230, 110, 20) in colours  # both curves were drawn


def test_recon_gif_puts_original_and_reconstruction_side_by_side(tmp_path: Path) -> None:
    from worldloom.demo.tokenizer_stage import write_recon_gif

    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8))
             for n in (5, 9)]
    path = write_recon_gif(pairs, tmp_path / "recon.gif", zoom=2)
    assert path.read_bytes()[:6] == b"GIF89a"
    import av

    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 9  # the longest clip; the shorter one holds its last frame
    h, w = frames[0].shape[:2]
    assert w == (32 + 4 + 32) * 2 and h >= (32 + 4 + 32) * 2


def test_psnr_by_horizon_plot_draws_every_series(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    from worldloom.demo.plots import plot_lines

    series = [("ar model", (31, 119, 180), False, [(1, 30.0), (2, 27.5), (4, 24.0)]),
              ("copy-last", (120, 120, 120), True, [(1, 31.0), (2, 26.0), (4, 21.0)])]
    path = plot_lines(series, tmp_path / "h.png", title="t", x_label="h", y_label="PSNR", size=(600, 350))
    with Image.open(path) as img:
        assert img.size == (600, 350)
        colours = {tuple(p) for p in np.asarray(img.convert("RGB")).reshape(-1, 3)}
    assert (31, 119, 180) in colours and (120, 120, 120) in colours


def test_prediction_gif_has_a_column_per_video_and_marks_predicted_frames(tmp_path: Path) -> None:
    from worldloom.demo.plots import write_grid_gif
    from worldloom.demo.world_stage import mark_predicted

    grey = np.full((9, 16, 16, 3), 128, np.uint8)
    marked = mark_predicted(grey, 5)
    assert (marked[:5] == 128).all() and tuple(marked[5, 0, 7]) == (230, 30, 30) and tuple(marked[8, 8, 8]) == (128,) * 3
    path = write_grid_gif([[grey, marked, marked]] * 2, ["real", "ar", "diffusion"], tmp_path / "p.gif", zoom=1)
    import av

    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 9 and frames[0].shape[1] == 3 * 16 + 2 * 4


def test_worldloom_demo_is_the_cli_command_this_package_provides(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from worldloom.cli.main import app

    result = CliRunner().invoke(app, ["demo", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "data folder not found" in result.output
    assert not (tmp_path / "out").exists()
