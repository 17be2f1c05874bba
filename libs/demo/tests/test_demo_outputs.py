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


def _world_section() -> dict:
    """Two trained families as the train service reports them: against the real frames and the decoded future."""
    def metrics(model_real: list[float], copy_real: list[float], model_dec: list[float], copy_dec: list[float]) -> dict:
        out = {}
        for h, mr, cr, md, cd in zip((1, 2, 4), model_real, copy_real, model_dec, copy_dec, strict=True):
            out |= {f"val_model_h{h}_psnr_vs_real": mr, f"val_copy_last_h{h}_psnr_vs_real": cr,
                    f"val_model_h{h}_ssim_vs_real": mr / 100, f"val_copy_last_h{h}_ssim_vs_real": cr / 100,
                    f"val_model_h{h}_fg_psnr_vs_real": mr - 10, f"val_copy_last_h{h}_fg_psnr_vs_real": cr - 13,
                    f"val_model_h{h}_action_gain_db": (mr - cr) / 10,
                    f"val_model_h{h}_psnr_vs_decoded": md, f"val_copy_last_h{h}_psnr_vs_decoded": cd}
        return out

    return {"env": "Pendulum-v1", "models": {
        "diffusion": {"model_id": "wm-d", "state": "succeeded", "steps": 1200, "train_seconds": 130.0,
                      "metrics": metrics([26.11, 25.02, 23.50], [24.41, 23.0, 21.0], [31.5, 30.5, 29.5], [30.1, 29.1, 28.1])},
        "ar": {"model_id": "wm-a", "state": "succeeded", "steps": 400, "train_seconds": 99.0,
               "metrics": metrics([16.4, 16.3, 16.2], [24.4, 23.3, 21.2], [35.0, 34.0, 33.0], [20.0, 19.0, 18.0])},
    }}


def test_world_summary_headlines_the_real_frames_and_labels_the_decoded_line(tmp_path: Path) -> None:
    from rich.console import Console

    from worldloom.demo.world_stage import world_summary

    console = Console(record=True, width=240, color_system=None)
    world_summary(_world_section(), tmp_path, console)
    text = console.export_text()
    table, _, rest = text.partition("diffusion: beats")
    assert "against the real frames" in table and "PSNR dB" in table and "SSIM" in table
    assert "26.11 / 24.41" in table and "0.261 / 0.244" in table and "16.40 / 24.40" in table
    assert "fg PSNR dB" in table and "16.11 / 11.41" in table and "6.40 / 11.40" in table  # the foreground row
    assert "31.50" not in table and "35.00" not in table  # the decoded future is not in the headline
    # measured verdicts: diffusion clears 1 dB everywhere (+1.70, +2.02, +2.50), AR nowhere (-8.00 at h1)
    assert "by >= 1 dB at every horizon (h1 +1.70, h2 +2.02, h4 +2.50 dB)" in text
    assert "ar: does not beat copy-last-frame by 1 dB at any horizon (h1 -8.00" in text
    # ... and in foreground PSNR (3 dB more margin by construction), then the action gain as measured
    assert "diffusion (foreground PSNR): beats copy-last-frame by >= 1 dB at every horizon (h1 +4.70" in text
    assert "ar (foreground PSNR): does not beat copy-last-frame by 1 dB at any horizon (h1 -5.00" in text
    assert "diffusion: action gain (PSNR with the true actions minus with shuffled actions, against the real " \
           "frames): h1 +0.17, h2 +0.20, h4 +0.25 dB" in " ".join(text.split())
    secondary = " ".join(text[text.index("secondary"):].split())
    assert "decoding of the real future" in secondary and "ar: h1 35.00 / 20.00" in secondary
    assert "bench" not in text  # no figure this run did not measure


def test_world_summary_shows_an_unmeasured_horizon_as_missing_not_as_a_figure(tmp_path: Path) -> None:
    from rich.console import Console

    from worldloom.demo.world_stage import world_summary

    section = _world_section()
    metrics = section["models"]["ar"]["metrics"]
    for key in [k for k in metrics if "_vs_real" in k or "action_gain" in k]:
        del metrics[key]  # e.g. the clips' real renditions were not found (the action gain needs them too)
    del section["models"]["diffusion"]["metrics"]["val_model_h4_psnr_vs_real"]
    console = Console(record=True, width=240, color_system=None)
    world_summary(section, tmp_path, console)
    text = console.export_text()
    assert "ar: not scored against the real frames in this run" in text
    assert "diffusion: beats copy-last-frame by >= 1 dB at h1, h2 only (h1 +1.70, h2 +2.02 dB; h4 not measured)" in text
    assert "ar (foreground PSNR)" not in text and "ar: action gain" not in text  # nothing measured, nothing said
    for key in [k for k in section["models"]["diffusion"]["metrics"] if "fg_psnr" in k or "action_gain" in k]:
        del section["models"]["diffusion"]["metrics"][key]  # real frames, but no foreground pixel, no actions
    console = Console(record=True, width=240, color_system=None)
    world_summary(section, tmp_path, console)
    text = console.export_text()
    assert "diffusion (foreground PSNR): not measured (no foreground pixel in the scored frames)" in text
    assert "action gain" not in text
    fg_row = next(line for line in text.splitlines() if "fg PSNR dB" in line)
    assert [c for c in fg_row.split("fg PSNR dB")[1].split() if c != "│"] == ["-", "-", "-"]


def test_the_horizon_plot_is_against_the_real_frames(tmp_path: Path) -> None:
    from worldloom.demo.world_stage import psnr_plot, psnr_series

    models = _world_section()["models"]
    series = {name: pts for name, _, _, pts in psnr_series(models)}
    assert series["diffusion model"] == [(1, 26.11), (2, 25.02), (4, 23.5)]
    assert series["copy-last frame (ar)"] == [(1, 24.4), (2, 23.3), (4, 21.2)]  # other frames: another baseline
    same = {f: {**m, "metrics": {**m["metrics"], **{k: v for k, v in models["ar"]["metrics"].items() if "copy_last" in k}}}
            for f, m in models.items()}
    lines = psnr_series(same)  # both scored the same held-out frames: copy-last-frame once, grey
    assert [(name, colour, dashed) for name, colour, dashed, _ in lines] == [
        ("diffusion model", (214, 39, 40), False), ("ar model", (31, 119, 180), False),
        ("copy-last frame", (120, 120, 120), True)]
    assert psnr_plot(models, tmp_path / "h.png") and (tmp_path / "h.png").stat().st_size > 0
    unscored = {f: {**m, "metrics": {k: v for k, v in m["metrics"].items() if "_vs_real" not in k}}
                for f, m in models.items()}
    assert not psnr_plot(unscored, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_posttrain_summary_shows_before_after_and_copy_last_against_the_real_frames(tmp_path: Path) -> None:
    from rich.console import Console

    from worldloom.demo.posttrain_stage import posttrain_summary

    m: dict[str, float] = {"base_val_loss": 0.91, "val_loss": 0.42}
    for h, (before, after, copy) in zip((1, 2, 4), ((17.1, 21.5, 20.0), (16.9, 20.7, 19.1), (16.5, 19.2, 18.4)),
                                        strict=True):
        m[f"base_val_model_h{h}_psnr_vs_real"], m[f"val_model_h{h}_psnr_vs_real"] = before, after
        m[f"val_copy_last_h{h}_psnr_vs_real"] = copy
        m[f"val_model_h{h}_ssim_vs_real"] = 0.5 + h / 100
    section = {"model_id": "wm-p", "metrics": m, "steps": 300, "train_seconds": 61.0, "files": {"predictions_gif": "p.gif"},
               "lineage": {"datasets": ["demo-acrobot-search@v1"], "dataset_query": {"clip_id": "c1"}}}
    console = Console(record=True, width=240, color_system=None)
    posttrain_summary(section, tmp_path, console)
    text = " ".join(console.export_text().replace("│", " ").split())
    assert "demo-acrobot-search@v1" in text and "clips like c1" in text and "against the real frames" in text
    assert "before (base, no actions) PSNR dB 17.10 16.90 16.50" in text
    assert "after (LoRA) PSNR dB 21.50 20.70 19.20" in text and "SSIM 0.510 0.520 0.540" in text
    assert "copy-last frame PSNR dB 20.00 19.10 18.40" in text and "SSIM - - -" in text  # not measured: "-"
    assert "held-out loss 0.9100 before -> 0.4200 after (300 steps, 61 s)" in text
    console = Console(record=True, width=240, color_system=None)
    posttrain_summary({"error": "no Acrobot-v1 episode passed curation"}, tmp_path, console)
    assert "no Acrobot-v1 episode passed curation" in console.export_text()


def test_rl_summary_and_learning_curve_show_what_the_experiment_measured(tmp_path: Path) -> None:
    from rich.console import Console

    from worldloom.demo.rl_stage import learning_curve, rl_summary

    curves = {"real_return": [[500, 9.5], [1000, 31.0]], "imagined_return": [[500, 4.0], [1000, 12.5]]}
    assert learning_curve(curves, tmp_path / "c.png") and (tmp_path / "c.png").stat().st_size > 1000
    assert not learning_curve({}, tmp_path / "none.png") and not (tmp_path / "none.png").exists()
    section = {"experiment_id": "rl-x", "state": "succeeded", "seconds": 45.0, "curves": curves,
               "lineage": {"policy_id": "pol-x"}, "evaluation": {"returns": [20.0, 30.0]}, "files": {"gif": "g.gif"}}
    console = Console(record=True, width=200, color_system=None)
    rl_summary(section, tmp_path, console)
    text = " ".join(console.export_text().replace("│", " ").split())
    assert "rl-x on CartPole-v1" in text and "500 9.5 4.0" in text and "1000 31.0 12.5" in text
    assert "pol-x: 2 real episodes on unseen seeds, mean return 25.0" in text and "g.gif" in text
