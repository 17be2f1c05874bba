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

from worldloom.cli.episodes_cmd import read_episodes
from worldloom.cli.main import app
from worldloom.cli.world_cmd import EvalItem, ModelInfo, evaluate_video, parse_horizons
from worldloom.core.settings import StoreSettings
from worldloom.core.store import make_store
from worldloom.models.frames import fit_frames
from worldloom.models.world import ActionSpec
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
    put_world_model(store, "wm-arm", tiny_ar(text_dim=None, action=ActionSpec.continuous(7)), "ar", "tok-d", work)
    with GenerateServer(root, ["wm-ar", "wm-dit", "wm-arm"], token=TOKEN) as generate:
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


# ------------------------------------------------------------------------ robot-episode folders (Bridge layout)


def _episode(root: Path, split: str, name: str, frames: int, action_rows: int, seed: int) -> np.ndarray:
    (root / "videos" / split / name).mkdir(parents=True)
    write_video(root / "videos" / split / name / "rgb.mp4", width=40, height=32, frames=frames, seed=seed)
    actions = np.random.default_rng(seed).uniform(-1, 1, (action_rows, 7)).round(4)
    ann = {"texts": [f"push the {name}"], "action": actions.tolist(), "episode_id": name}
    (root / "annotation" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotation" / split / f"{name}.json").write_text(json.dumps(ann))
    return actions


@pytest.fixture(scope="module")
def episodes(server) -> Path:
    root = server[1] / "robot"
    _episode(root, "val", "cup", 24, 23, seed=4)
    _episode(root, "val", "few", 24, 5, seed=5)  # 5 rows: too few for any horizon
    _episode(root, "train", "pot", 24, 23, seed=6)
    (root / "annotation" / "val" / "lost.json").write_text(json.dumps({"action": [[0.0] * 7]}))  # no video
    return root


def test_eval_episode_folder_scores_each_episode_with_its_actions(server, episodes) -> None:
    result = run(server, "model", "eval", "-m", "wm-arm", "--horizons", "1,2", "--split", "val", "--json", str(episodes))
    assert result.exit_code == 1, result.output  # "few" and "lost" fail, with their reasons
    doc = json.loads(result.stdout)
    by_ep = {v["episode"]: v for v in doc["videos"] if v["episode"]}
    assert set(by_ep) == {"val/cup", "val/few"}  # the train split is left out
    cup = by_ep["val/cup"]
    assert cup["error"] is None and cup["actions_sent"] == 5 + 2 * 4 - 1  # one per frame transition
    assert cup["horizons"]["2"]["frames"] == [10, 13] and 0 < cup["horizons"]["2"]["model"]["psnr"] < 100
    assert by_ep["val/few"]["error"].startswith("too_few_actions: 5 rows")
    assert any("no video for annotation lost.json" in (v["error"] or "") for v in doc["videos"])
    assert doc["mean"]["videos"] == 1 and doc["failed"] == 2

    # --no-actions: context only (the same real frames, so the same copy-last)
    bare = json.loads(run(server, "model", "eval", "-m", "wm-arm", "--horizons", "1,2", "--split", "val",
                          "--no-actions", "--json", str(episodes)).stdout)
    bare_cup = next(v for v in bare["videos"] if v["episode"] == "val/cup")
    assert bare_cup["actions_sent"] is None and bare_cup["horizons"]["2"]["copy_last"] == cup["horizons"]["2"]["copy_last"]
    # the rows do reach the server: a model taking 3-d actions refuses these 7-d ones, episode by episode
    narrow = json.loads(run(server, "model", "eval", "-m", "wm-ar", "--horizons", "1", "--split", "val", "--json",
                            str(episodes)).stdout)
    narrow_cup = next(v for v in narrow["videos"] if v["episode"] == "val/cup")
    assert "action width 7; this model takes 1..3" in narrow_cup["error"]
    assert json.loads(run(server, "model", "eval", "-m", "wm-ar", "--horizons", "1", "--split", "val", "--json",
                          "--no-actions", str(episodes)).stdout)["mean"]["videos"] == 2  # "few" too

    table = run(server, "model", "eval", "-m", "wm-arm", "--horizons", "1", str(episodes))  # all splits
    assert table.exit_code == 1 and "val/cup" in table.stdout and "train/pot" in table.stdout
    assert "mean of 2 video(s), 2 failed" in table.stdout
    missing = run(server, "model", "eval", "-m", "wm-arm", "--split", "test", str(episodes))
    assert missing.exit_code == 2 and "no episodes in split 'test'" in missing.output


def test_eval_sends_the_rows_of_the_context_and_predicted_frames(episodes) -> None:
    """The request carries rows 0 .. C + max(h) * tc - 2 of the episode's actions, as FP32 [N, 7]."""
    ep = next(e for e in read_episodes(episodes, "val")[0] if e.episode == "cup")
    sent: list[dict] = []

    class Client:
        def infer(self, model_id: str, body: dict) -> dict:
            sent.append(body)
            n = body["parameters"]["num_frames"]
            return {"outputs": [{"name": "frames", "shape": [n, RES, RES, 3], "data": [0] * (n * RES * RES * 3)}],
                    "parameters": {"context_frames_used": 5}}

    row = evaluate_video(Client(), ModelInfo("m", "ar", (RES, RES), 4), EvalItem(ep.video, ep), 5, [1, 3], 0)
    assert row.error is None and row.actions_sent == 5 + 12 - 1
    actions = next(i for i in sent[0]["inputs"] if i["name"] == "actions")
    assert actions["datatype"] == "FP32" and actions["shape"] == [16, 7]
    assert np.allclose(np.reshape(actions["data"], (16, 7)), np.asarray(ep.actions[:16]), atol=1e-6)
    evaluate_video(Client(), ModelInfo("m", "ar", (RES, RES), 4), EvalItem(ep.video, ep, send_actions=False), 5, [1], 0)
    assert [i["name"] for i in sent[1]["inputs"]] == ["context_frames"]


def test_predict_from_an_episode_folder_uses_its_actions(server, episodes) -> None:
    tmp = server[1]
    args = ["predict", "-m", "wm-arm", "-c", str(episodes), "--split", "val", "-n", "8", "--seed", "2"]
    result = run(server, *args, "--episode", "cup", "-o", str(tmp / "ep.mp4"))
    assert result.exit_code == 0, result.output
    assert "of episode val/cup (push the cup) used, 12 action rows" in result.stdout  # 5 + 2 * 4 - 1
    assert _decode(tmp / "ep.mp4").shape == (8, RES, RES, 3)
    first = run(server, *args, "-o", str(tmp / "first.mp4"))  # no --episode: the split's first one
    assert first.exit_code == 0 and "val/cup" in first.stdout
    assert (tmp / "first.mp4").read_bytes() == (tmp / "ep.mp4").read_bytes()
    few = run(server, *args, "--episode", "few", "-o", str(tmp / "few.mp4"))
    assert few.exit_code == 1 and "has 5 action rows" in few.stderr and not (tmp / "few.mp4").exists()
    nope = run(server, *args, "--episode", "nope", "-o", str(tmp / "nope.mp4"))
    assert nope.exit_code == 2 and "no usable episode 'nope'" in nope.output
    video = run(server, "predict", "-m", "wm-arm", "-c", str(episodes / "videos/val/cup/rgb.mp4"), "--episode", "cup",
                "-n", "4", "-o", str(tmp / "v.mp4"))
    assert video.exit_code == 2 and "not an episode folder" in video.output


def test_eval_real_bridge_val_split(server, shared_data: Path) -> None:
    """The 5 real BridgeData V2 val episodes (640x480, 3 fps, 7-d actions), read only."""
    result = run(server, "model", "eval", "-m", "wm-arm", "--horizons", "1,2", "--split", "val", "--json",
                 str(shared_data / "bridge"))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["failed"] == 0 and doc["mean"]["videos"] == 5
    assert {v["episode"] for v in doc["videos"]} == {"val/1527", "val/199", "val/1996", "val/2390", "val/27"}
    assert all(v["actions_sent"] == 12 for v in doc["videos"])
    assert 5 < doc["mean"]["horizons"]["1"]["copy_last"]["psnr"] < 60
