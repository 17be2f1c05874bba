"""`worldloom predict` and `worldloom model eval` against the real generate model server (KServe, a subprocess
on 127.0.0.1) serving tiny random-init world models from a LocalStore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import typer
from click.testing import Result
from typer.testing import CliRunner

from worldloom.cli.main import app
from worldloom.cli.world_cmd import parse_horizons
from worldloom.core.settings import StoreSettings
from worldloom.core.store import make_store
from worldloom.models.frames import fit_frames
from worldloom.testkit.generate import GenerateServer
from worldloom.testkit.models import put_tokenizer, put_world_model, tiny_ar, tiny_dit
from worldloom.testkit.ports import free_port
from worldloom.video.synthetic import write_video

RES = 16  # 16x16 frames, 4x8x8 compression: 2x2 latent frames, tc = 4
TOKEN = "cli-gen-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("generate-cli")
    root, work = tmp / "store", tmp / "work"
    work.mkdir()
    store = make_store(StoreSettings(kind="local", root=root))
    put_tokenizer(store, "tok-d", "discrete", work)
    put_tokenizer(store, "tok-c", "continuous", work)
    put_world_model(store, "wm-ar", tiny_ar(text_dim=None), "ar", "tok-d", work)
    put_world_model(store, "wm-dit", tiny_dit(), "diffusion", "tok-c", work)
    with GenerateServer(root, ["wm-ar", "wm-dit"], token=TOKEN) as generate:
        yield generate.url, tmp


def run(server: tuple[str, Path], *args: str, api: str | None = None) -> Result:
    env = {"WORLDLOOM_CLI_GENERATE_URL": api or server[0], "WORLDLOOM_CLI_TOKEN": TOKEN, "COLUMNS": "220"}
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture(scope="module")
def video(server) -> Path:
    return write_video(server[1] / "context.mp4", width=40, height=32, frames=24, seed=3)


def _decode(path: Path) -> np.ndarray:
    from worldloom.video.decode import read_frames

    frames, _ = read_frames(path)
    return frames


def test_predict_mp4_with_actions_is_reproducible(server, video) -> None:
    tmp = server[1]
    np.save(tmp / "actions.npy", np.full((3, 3), 0.5, np.float32))  # 2 context + 2 predicted latents - 1
    outs = []
    for name in ("a.mp4", "b.mp4"):
        result = run(server, "predict", "--model", "wm-ar", "--context", str(video), "--frames", "8",
                     "--out", str(tmp / name), "--seed", "7", "--temperature", "0.9", "--top-k", "16",
                     "--actions", str(tmp / "actions.npy"))
        assert result.exit_code == 0, result.output
        assert "8 frames, seed 7, 5 of 5 context frames used" in result.stdout
        outs.append((tmp / name).read_bytes())
    assert outs[0] == outs[1] and b"ftyp" in outs[0][:12]
    assert _decode(tmp / "a.mp4").shape == (8, RES, RES, 3)

    other = run(server, "predict", "-m", "wm-ar", "-c", str(video), "-n", "8", "-o", str(tmp / "c.mp4"))
    assert other.exit_code == 0 and "reproduce with --seed" in other.stderr


def test_predict_gif_diffusion_with_json_actions(server, video) -> None:
    tmp = server[1]
    (tmp / "actions.json").write_text(json.dumps([1, 2, 3]))
    result = run(server, "predict", "--model", "wm-dit", "--context", str(video), "--frames", "6", "--steps", "2",
                 "--seed", "1", "--out", str(tmp / "out" / "p.gif"), "--actions", str(tmp / "actions.json"))
    assert result.exit_code == 0, result.output
    assert (tmp / "out" / "p.gif").read_bytes()[:4] == b"GIF8" and "6 frames, seed 1" in result.stdout


def test_predict_errors(server, video) -> None:
    tmp = server[1]
    unknown = run(server, "predict", "-m", "wm-nope", "-c", str(video), "-n", "4", "-o", str(tmp / "x.mp4"))
    assert unknown.exit_code == 2 and "404" in unknown.stderr and "wm-nope" in unknown.stderr
    assert not (tmp / "x.mp4").exists()
    bad = run(server, "predict", "-m", "wm-dit", "-c", str(video), "-n", "4", "-o", str(tmp / "x.mp4"),
              "--temperature", "0.5")
    assert bad.exit_code == 2 and "400 bad_input" in bad.stderr and "autoregressive" in bad.stderr
    suffix = run(server, "predict", "-m", "wm-ar", "-c", str(video), "-n", "4", "-o", str(tmp / "x.avi"))
    assert suffix.exit_code == 2 and ".mp4 or .gif" in suffix.output
    down = run(server, "predict", "-m", "wm-ar", "-c", str(video), "-n", "4", "-o", str(tmp / "x.mp4"),
               api=f"http://127.0.0.1:{free_port()}")
    assert down.exit_code == 2 and "cannot reach" in down.stderr


def test_eval_table_json_and_failures(server) -> None:
    tmp = server[1]
    folder = tmp / "eval"
    folder.mkdir()
    good = write_video(folder / "good.mp4", width=40, height=32, frames=24, seed=5)
    result = run(server, "model", "eval", "--model", "wm-ar", "--horizons", "1,2", str(good))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("wm-ar (ar, 16x16, tc=4)", "h=1 (frames 6-9)", "h=2 (frames 10-13)", "model", "copy-last",
                 "mean of 1 video(s)", "good.mp4"):
        assert text in out, text

    garbage = folder / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    result = run(server, "model", "eval", "-m", "wm-ar", "--horizons", "2,1", "--json", str(folder))
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["t_compression"] == 4 and doc["resolution"] == [RES, RES] and doc["horizons"] == [1, 2]
    by_name = {Path(v["path"]).name: v for v in doc["videos"]}
    assert by_name["garbage.mp4"]["error"].startswith("not_a_video")
    h2 = by_name["good.mp4"]["horizons"]["2"]
    assert h2["frames"] == [10, 13] and 0 < h2["model"]["psnr"] < 100 and -1 <= h2["copy_last"]["ssim"] <= 1
    assert doc["mean"]["videos"] == 1 and doc["failed"] == 1
    assert doc["mean"]["horizons"]["1"]["model"]["psnr"] == pytest.approx(by_name["good.mp4"]["horizons"]["1"]["model"]["psnr"])
    # the same seed gives the same numbers
    again = json.loads(run(server, "model", "eval", "-m", "wm-ar", "--horizons", "1,2", "--json", str(good)).stdout)
    assert again["videos"][0]["horizons"]["2"] == h2

    table = run(server, "model", "eval", "-m", "wm-ar", "--horizons", "1", str(good), str(garbage))
    assert table.exit_code == 1 and "failed: not_a_video" in table.stdout and "1 failed" in table.stdout

    clip = write_video(tmp / "short.mp4", width=16, height=16, frames=12, seed=2)
    short = run(server, "model", "eval", "-m", "wm-ar", "--horizons", "1,2", str(clip), str(good))  # 5 + 8 frames
    assert short.exit_code == 1 and "too_short: 12 frames" in short.stdout and "mean of 1 video(s)" in short.stdout

    too_far = run(server, "model", "eval", "-m", "wm-ar", "--horizons", "1,4", str(good), str(good))
    assert too_far.exit_code == 2 and "this model predicts 1..12 frames" in too_far.stderr  # not per video

    unknown = run(server, "model", "eval", "-m", "wm-nope", str(good))
    assert unknown.exit_code == 2 and "404" in unknown.stderr and "wm-nope" in unknown.stderr


def test_eval_diffusion_model(server) -> None:
    good = write_video(server[1] / "dit.mp4", width=24, height=24, frames=13, seed=1)
    result = run(server, "model", "eval", "-m", "wm-dit", "--horizons", "1,2", "--json", str(good))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["family"] == "diffusion" and doc["t_compression"] == 4 and doc["failed"] == 0


def test_helpers() -> None:
    assert parse_horizons("8, 1,4,4") == [1, 4, 8]
    for bad in ("", "0,1", "a"):
        with pytest.raises(typer.BadParameter):
            parse_horizons(bad)
    frames = np.random.default_rng(0).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
    # the same crop + resize as the server applies to context frames
    from worldloom.generate.service import WorldModelEngine

    for res in ((16, 16), (8, 12)):
        expected = WorldModelEngine._fit_resolution(SimpleNamespace(resolution=res), frames[None], True)[0]
        assert np.array_equal(fit_frames(frames, res), expected)
