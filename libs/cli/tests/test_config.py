"""Where the CLI finds each service: per-service variables, the gateway, deprecated names, defaults."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from worldloom.cli.config import DEFAULT_URL, SERVICES, ConfigError, endpoint
from worldloom.cli.main import app

OLD = ("WORLDLOOM_API_URL", "WORLDLOOM_API_TOKEN", "WORLDLOOM_TRAIN_URL", "WORLDLOOM_TRAIN_TOKEN",
       "WORLDLOOM_GENERATE_URL", "WORLDLOOM_GENERATE_TOKEN")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in [n for n in os.environ if n.startswith("WORLDLOOM_CLI_")] + list(OLD):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_each_service_has_its_own_variable_then_the_gateway_then_the_default(clean_env) -> None:
    assert {s: endpoint(s).url for s in SERVICES} == {s: DEFAULT_URL for s in SERVICES}
    clean_env.setenv("WORLDLOOM_CLI_GATEWAY_URL", "https://wl.example/")
    clean_env.setenv("WORLDLOOM_CLI_SEARCH_URL", "http://10.0.0.5:8004")
    urls = {s: endpoint(s) for s in SERVICES}
    assert urls["search"].url == "http://10.0.0.5:8004" and urls["search"].source == "WORLDLOOM_CLI_SEARCH_URL"
    assert urls["ingest"].url == "https://wl.example/ingest" and urls["generate"].url == "https://wl.example/generate"
    assert urls["tokenize"].source == "WORLDLOOM_CLI_GATEWAY_URL"
    assert endpoint("search", api="http://127.0.0.1:9/").url == "http://127.0.0.1:9"  # --api wins over everything
    assert all(not e.deprecated for e in urls.values())


def test_tokens_per_service_then_shared(clean_env) -> None:
    assert endpoint("ingest").token is None
    clean_env.setenv("WORLDLOOM_CLI_TOKEN", "shared")
    clean_env.setenv("WORLDLOOM_CLI_TRAIN_TOKEN", "train-only")
    assert endpoint("ingest").token == "shared" and endpoint("train").token == "train-only"
    assert endpoint("train", token="given").token == "given"


def test_deprecated_names_still_work_for_one_release_and_say_so(clean_env) -> None:
    clean_env.setenv("WORLDLOOM_API_URL", "http://old:8000")
    clean_env.setenv("WORLDLOOM_API_TOKEN", "old-token")
    clean_env.setenv("WORLDLOOM_TRAIN_URL", "http://old-train:8000")
    ingest, train, generate = endpoint("ingest"), endpoint("train"), endpoint("generate")
    assert (ingest.url, ingest.token) == ("http://old:8000", "old-token")
    assert train.url == "http://old-train:8000" and generate.url == "http://old:8000"
    assert any("WORLDLOOM_API_URL is deprecated" in n and "WORLDLOOM_CLI_INGEST_URL" in n for n in ingest.deprecated)
    assert any("WORLDLOOM_API_TOKEN is deprecated" in n for n in ingest.deprecated)
    clean_env.setenv("WORLDLOOM_CLI_GATEWAY_URL", "http://gw")  # any new variable takes precedence, silently
    assert endpoint("train").url == "http://gw/train" and not any("_URL" in n for n in endpoint("train").deprecated)


@pytest.mark.parametrize("bad", ["ingest:8000", "ftp://x", "http://", "http:///v1"])
def test_a_url_that_is_not_http_is_refused_with_its_variable_named(clean_env, bad: str) -> None:
    clean_env.setenv("WORLDLOOM_CLI_INGEST_URL", bad)
    with pytest.raises(ConfigError, match="WORLDLOOM_CLI_INGEST_URL"):
        endpoint("ingest")
    result = CliRunner().invoke(app, ["videos"])
    assert result.exit_code == 2 and "WORLDLOOM_CLI_INGEST_URL" in result.output
    clean_env.delenv("WORLDLOOM_CLI_INGEST_URL")
    with pytest.raises(ConfigError, match="--api"):
        endpoint("search", api=bad)


def test_the_cli_reports_the_url_it_could_not_reach(clean_env) -> None:
    from worldloom.testkit.ports import free_port

    clean_env.setenv("WORLDLOOM_CLI_INGEST_URL", f"http://127.0.0.1:{free_port()}")
    result = CliRunner().invoke(app, ["videos"])
    assert result.exit_code == 2 and "cannot reach the service at http://127.0.0.1:" in result.output
