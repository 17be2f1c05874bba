"""`worldloom rl run | show | policies | eval` against the real rlsim app (HTTP on 127.0.0.1, local store,
in-process bus, CartPole-v1 at 32x32 with tiny models: seconds)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from worldloom.cli.main import app
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore

TOKEN = "cli-rl-token"
TINY = {
    "world_model": {
        "config": {"n_layer": 1, "d_model": 32, "n_head": 2},
        "batch": 2,
        "tokenizer": {"channels": 16, "steps": 2, "batch": 2},
    },
    "agent": {"hidden": 32, "layers": 1, "imagined_envs": 4, "horizon": 4, "imagined_episode_steps": 20},
    "max_episode_steps": 50,
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from worldloom.rlsim.app import build_app
    from worldloom.rlsim.settings import RlsimSettings

    tmp = tmp_path_factory.mktemp("rlsim-cli")
    settings = RlsimSettings(http=HttpSettings(api_tokens=TOKEN), store=StoreSettings(root=tmp / "store"))
    app_ = build_app(settings, store=LocalStore(tmp / "store"), bus=InProcessBus(retry_backoff_s=0.01))
    with BackgroundServer(app_) as server:
        yield server.url, tmp


def run(service: tuple[str, Path], *args: str) -> Result:
    env = {"WORLDLOOM_CLI_RLSIM_URL": service[0], "WORLDLOOM_CLI_TOKEN": TOKEN, "COLUMNS": "220"}
    return CliRunner().invoke(app, ["rl", *args], env=env)


def test_run_show_and_eval(service) -> None:
    result = run(
        service,
        "run",
        "--env",
        "CartPole-v1",
        "--steps",
        "80",
        "--resolution",
        "32",
        "--warmup",
        "40",
        "--per-iteration",
        "40",
        "--eval-episodes",
        "1",
        "--wm-updates",
        "2",
        "--agent-updates",
        "2",
        "--poll",
        "0.1",
        "--request",
        json.dumps(TINY),
    )
    assert result.exit_code == 0, result.output
    assert "real steps" in result.output and "return" in result.output  # the progress bar's fields
    policy_id = result.stdout.strip().splitlines()[-1]
    assert policy_id.startswith("pol-")
    listed = json.loads(run(service, "policies", "--json").stdout)
    assert [p["policy_id"] for p in listed] == [policy_id]
    eid = listed[0]["lineage"]["experiment_id"]
    shown = json.loads(run(service, "show", eid, "--json").stdout)
    assert shown["state"] == "succeeded" and shown["step"] == 80
    out = service[1] / "eval.mp4"
    result = run(service, "eval", policy_id, "--episodes", "2", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    ev = json.loads(result.stdout)
    assert len(ev["returns"]) == 2 and out.read_bytes()[4:8] == b"ftyp"


def test_refusal_is_exit_2(service) -> None:
    result = run(service, "run", "--env", "NoSuchEnv-v0", "--steps", "10")
    assert result.exit_code == 2, result.output
    assert "env_not_allowed" in result.output
