"""`worldloom predict` and `worldloom model eval` against the real generate model server (KServe, a subprocess
on 127.0.0.1) serving tiny random-init world models from a LocalStore."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from worldloom.cli.main import app
from worldloom.cli.world_cmd import parse_horizons
from worldloom.core.settings import StoreSettings
from worldloom.core.store import make_store
from worldloom.models.frames import fit_frames
from worldloom.models.tokenizer import CausalVideoTokenizer, save_checkpoint
from worldloom.models.tokenizer.job import model_key as tokenizer_key
from worldloom.models.world import ActionSpec, ARConfig, ARWorldModel, DiffusionWorldModel, DiTConfig
from worldloom.models.world.job import save_world_checkpoint
from worldloom.models.world.registry import ModelLineage, ModelRecord, ModelRegistry
from worldloom.video.synthetic import write_video

RES = 16  # 16x16 frames, 4x8x8 compression: 2x2 latent frames, tc = 4
TOKEN = "cli-gen-token"


def _perturb(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _upload(store, key: str, path: Path) -> None:  # noqa: ANN001
    with open(path, "rb") as f:
        store.put_file(key, f, path.stat().st_size)


def _put_tokenizer(store, tid: str, kind: str, tmp: Path) -> None:  # noqa: ANN001
    overrides = dict(channels=8, channel_mult=(1, 1, 1, 1), attention=False)
    if kind == "discrete":
        overrides["fsq_levels"] = (4, 4, 4)  # 64 codes
    else:
        overrides["latent_channels"] = 4
    tok = CausalVideoTokenizer.from_preset("tiny", kind, "4x8x8", **overrides)
    path = save_checkpoint(tmp / f"{tid}.safetensors", tok)
    key = tokenizer_key(f"tokenizers/{tid}")
    _upload(store, key, path)
    _upload(store, key.replace(".safetensors", ".json"), path.with_suffix(".json"))


def _put_world_model(store, model_id: str, model: torch.nn.Module, family: str, tid: str, tmp: Path) -> None:  # noqa: ANN001
    path = save_world_checkpoint(tmp / f"{model_id}.safetensors", model)
    _upload(store, f"models/{model_id}/model/world_model.safetensors", path)
    _upload(store, f"models/{model_id}/model/world_model.json", path.with_suffix(".json"))
    ModelRegistry(store).save(ModelRecord(model_id=model_id, name=model_id, family=family, state="succeeded",
                                          config=model.config.to_dict(), lineage=ModelLineage(tokenizer_id=tid)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("generate-cli")
    root, work = tmp / "store", tmp / "work"
    work.mkdir()
    store = make_store(StoreSettings(kind="local", root=root))
    _put_tokenizer(store, "tok-d", "discrete", work)
    _put_tokenizer(store, "tok-c", "continuous", work)
    ar = ARWorldModel(ARConfig.preset("tiny", vocab_size=64, tokens_per_frame=4, max_frames=4, n_layer=1, d_model=32,
                                      n_head=2, action=ActionSpec.continuous(3), text_dim=None))
    _perturb(ar, 1)
    _put_world_model(store, "wm-ar", ar, "ar", "tok-d", work)
    dit = DiffusionWorldModel(DiTConfig.preset("tiny", in_channels=4, latent_size=(2, 2), patch_size=1, max_frames=3,
                                               n_future=1, n_layer=1, d_model=32, n_head=2,
                                               action=ActionSpec.discrete(5), text_dim=None))
    _perturb(dit, 2)
    _put_world_model(store, "wm-dit", dit, "diffusion", "tok-c", work)

    port = _free_port()
    env = {**os.environ, "WORLDLOOM_GENERATE_MODEL_IDS": "wm-ar,wm-dit", "WORLDLOOM_GENERATE_HTTP__PORT": str(port),
           "WORLDLOOM_GENERATE_HTTP__HOST": "127.0.0.1", "WORLDLOOM_GENERATE_HTTP__API_TOKENS": TOKEN,
           "WORLDLOOM_GENERATE_STORE__ROOT": str(root), "WORLDLOOM_GENERATE_DEVICE": "cpu",
           "WORLDLOOM_GENERATE_TORCH_THREADS": "1", "WORLDLOOM_GENERATE_PRELOAD_TEXT_EMBEDDER": "false",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log_path = tmp / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "worldloom.generate"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("server exited:\n" + log_path.read_text()[-4000:])
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready:\n" + log_path.read_text()[-4000:])
            time.sleep(0.3)
        yield base, tmp
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run(server: tuple[str, Path], *args: str, api: str | None = None):  # noqa: ANN201 - click's Result
    env = {"WORLDLOOM_GENERATE_URL": api or server[0], "WORLDLOOM_API_TOKEN": TOKEN, "COLUMNS": "220"}
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
               api=f"http://127.0.0.1:{_free_port()}")
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
        with pytest.raises(Exception):
            parse_horizons(bad)
    frames = np.random.default_rng(0).integers(0, 256, (2, 24, 40, 3), dtype=np.uint8)
    # the same crop + resize as the server applies to context frames
    from worldloom.generate.engine import WorldModelEngine

    for res in ((16, 16), (8, 12)):
        expected = WorldModelEngine._fit_resolution(SimpleNamespace(resolution=res), frames[None], True)[0]
        assert np.array_equal(fit_frames(frames, res), expected)
