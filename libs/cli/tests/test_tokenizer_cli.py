"""`worldloom tokenizer ...` against the real tokenize app (HTTP on 127.0.0.1, local store, training in-process)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import numpy as np
import pytest
from click.testing import Result
from fastapi import FastAPI, Request, Response
from typer.testing import CliRunner

from worldloom.cli.client import WorldloomClient
from worldloom.cli.main import app
from worldloom.cli.tokenizer_cmd import dataset_ref
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.testkit.clips import synthetic_clip
from worldloom.testkit.ports import free_port
from worldloom.video.synthetic import write_video

TOKEN = "cli-test-token"
# tiny and fast: 32 px, 5-frame samples, a handful of steps
TRAIN_ARGS = ["--clips-source", "synthetic", "--kind", "discrete", "--resolution", "32", "--frames", "5",
              "--batch", "2", "--poll", "0.1"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from worldloom.tokenize.app import build_app
    from worldloom.tokenize.settings import TokenizeSettings

    tmp = tmp_path_factory.mktemp("tokenize-cli")
    store = LocalStore(tmp / "store")
    for i in range(3):
        synthetic_clip(store, tmp, i)
    settings = TokenizeSettings(http=HttpSettings(api_tokens=TOKEN), store=StoreSettings(root=tmp / "store"),
                                training={"in_process": True}, encode_max_frames=40)
    with BackgroundServer(build_app(settings, store=store, bus=InProcessBus(retry_backoff_s=0.01))) as server:
        yield server.url, tmp


def run(service: tuple[str, Path], *args: str) -> Result:
    url, _ = service
    env = {"WORLDLOOM_CLI_TOKENIZE_URL": url, "WORLDLOOM_CLI_TOKEN": TOKEN, "COLUMNS": "220"}
    return CliRunner().invoke(app, ["tokenizer", *args], env=env)


@pytest.fixture(scope="module")
def trained(service) -> str:
    result = run(service, "train", *TRAIN_ARGS, "--steps", "6", "--name", "cli-tiny")
    assert result.exit_code == 0, result.output
    tid = result.stdout.strip().splitlines()[-1]
    assert tid.startswith("tok-") and "val_psnr" in result.stdout
    return tid


def test_train_waits_until_succeeded_and_prints_metrics(service, trained) -> None:
    client = WorldloomClient(service[0], TOKEN)
    record = client.tokenizer(trained)
    client.close()
    assert record["state"] == "succeeded" and record["step"] == 6 and record["name"] == "cli-tiny"
    assert {"val_psnr", "val_ssim"} <= set(record["metrics"])


def test_eval_table_marks_rejected_videos_and_exits_1(service, trained) -> None:
    _, tmp = service
    folder = tmp / "eval"
    folder.mkdir()
    good = write_video(folder / "good.mp4", width=40, height=32, frames=9, seed=5)
    garbage = folder / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    result = run(service, "eval", "--tokenizer", trained, str(good), str(garbage))
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "good.mp4" in out and "garbage.mp4" in out and "rejected: not_a_video" in out
    assert "mean of 1 video(s)" in out and "at 32x32" in out

    result = run(service, "eval", "-t", trained, "--json", str(folder))  # a folder: both files, sorted
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    by_name = {Path(v["path"]).name: v for v in doc["videos"]}
    assert by_name["good.mp4"]["frames"] == 9 and 5 < by_name["good.mp4"]["psnr"] < 60
    assert by_name["garbage.mp4"]["error"].startswith("not_a_video")
    assert doc["mean"]["videos"] == 1 and doc["mean"]["psnr"] == pytest.approx(by_name["good.mp4"]["psnr"])

    ok = run(service, "eval", "-t", trained, str(good))
    assert ok.exit_code == 0, ok.output
    unknown = run(service, "eval", "-t", "tok-nope", str(good))  # a tokenizer problem stops at once
    assert unknown.exit_code == 2 and "tokenizer_not_found" in unknown.stderr


def test_list_show_activate(service, trained) -> None:
    listed = run(service, "list")
    assert listed.exit_code == 0 and trained in listed.stdout and "succeeded" in listed.stdout
    assert json.loads(run(service, "list", "--json").stdout)[0]["tokenizer_id"] == trained
    shown = run(service, "show", trained)
    assert shown.exit_code == 0, shown.output
    for text in ("succeeded", "discrete tiny 4x8x8", "2 train, 1 held out", '"source": "synthetic"', "val_ssim"):
        assert text in shown.stdout, text
    assert run(service, "show", "tok-missing").exit_code == 2
    activated = run(service, "activate", trained)
    assert activated.exit_code == 0 and "is active" in activated.stderr
    assert "(active)" in run(service, "show", trained).stdout


def test_no_wait_then_cancel(service, trained) -> None:
    started = run(service, "train", *TRAIN_ARGS, "--steps", "5000", "--no-wait")
    assert started.exit_code == 0, started.output
    tid = started.stdout.strip()
    client = WorldloomClient(service[0], TOKEN)
    try:
        cancelled = run(service, "cancel", tid)
        assert cancelled.exit_code == 0 and "cancel requested" in cancelled.stderr
        deadline = time.monotonic() + 30
        while client.tokenizer(tid)["state"] not in ("cancelled", "failed", "succeeded") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.tokenizer(tid)["state"] == "cancelled"
    finally:
        client.close()
    again = run(service, "cancel", tid)
    assert again.exit_code == 2 and "job_finished" in again.stderr
    shown = run(service, "show", tid)
    assert "cancelled" in shown.stdout


def test_ctrl_c_stops_waiting_and_says_how_to_follow_up(service, trained, monkeypatch) -> None:
    import worldloom.cli.tokenizer_cmd as cmd

    def interrupted(client: Any, tid: str, out: Any, poll_s: float = 1.0, record: Any = None,
                    fetch: Any = None) -> NoReturn:
        client.cancel_tokenizer(tid)  # keep the module's job queue short
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd, "follow_training", interrupted)
    result = run(service, "train", *TRAIN_ARGS, "--steps", "5000")
    assert result.exit_code == 130
    assert "stopped waiting" in result.stderr and "worldloom tokenizer cancel tok-" in result.stderr


def test_train_needs_exactly_one_data_source(service) -> None:
    assert run(service, "train").exit_code == 2
    assert run(service, "train", "--clips-source", "x", "--dataset", "d").exit_code == 2
    assert dataset_ref("robots@v3") == {"name": "robots", "version": 3}
    assert dataset_ref("robots") == {"name": "robots", "version": None}
    bad = run(service, "train", "--clips-source", "nothing-here")
    assert bad.exit_code == 2 and "no_clips" in bad.stderr


def _gateway(services: dict[str, str]) -> FastAPI:
    """A path-prefix gateway like the chart's Ingress: ``/<service>/<path>`` -> ``<that service>/<path>``."""
    gateway = FastAPI()
    gateway.state.seen = []

    @gateway.api_route("/{name}/{path:path}", methods=["GET", "POST", "DELETE"])
    async def forward(name: str, path: str, request: Request) -> Response:
        if name not in services:
            return Response(status_code=404)
        gateway.state.seen.append(f"/{name}/{path}")
        headers = {k: v for k, v in request.headers.items() if k in ("authorization", "content-type")}
        async with httpx.AsyncClient(base_url=services[name]) as client:
            r = await client.request(request.method, f"/{path}", params=request.query_params, headers=headers,
                                     content=await request.body())
        return Response(r.content, r.status_code, media_type=r.headers.get("content-type"))

    return gateway


def test_a_gateway_routes_each_service_under_its_name_and_old_names_still_work(service, trained) -> None:
    gateway = _gateway({"tokenize": service[0]})
    with BackgroundServer(gateway) as gw:
        env = {"WORLDLOOM_CLI_GATEWAY_URL": gw.url, "WORLDLOOM_CLI_TOKEN": TOKEN, "COLUMNS": "220"}
        shown = CliRunner().invoke(app, ["tokenizer", "show", trained, "--json"], env=env)
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["tokenizer_id"] == trained
        assert gateway.state.seen == [f"/tokenize/v1/tokenizers/{trained}"]
        env["WORLDLOOM_CLI_TOKENIZE_URL"] = f"http://127.0.0.1:{free_port()}"  # the service's own variable wins
        down = CliRunner().invoke(app, ["tokenizer", "list"], env=env)
        assert down.exit_code == 2 and "cannot reach the service" in down.stderr and len(gateway.state.seen) == 1
    old = CliRunner().invoke(app, ["tokenizer", "list", "--json"],
                             env={"WORLDLOOM_API_URL": service[0], "WORLDLOOM_API_TOKEN": TOKEN, "COLUMNS": "220"})
    assert old.exit_code == 0 and trained in old.stdout
    assert "WORLDLOOM_API_URL is deprecated" in old.stderr and "WORLDLOOM_API_TOKEN is deprecated" in old.stderr
