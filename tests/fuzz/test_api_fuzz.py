"""Schemathesis against every HTTP service's OpenAPI (with a token), a bounded number of examples per
operation: no answer >= 500, and every 4xx in the one error shape ``{"error": {"code", "message"}}``.

The services run in the embedded mode (local store, in-process bus, Milvus Lite) through ASGI: the fuzzed
surface is the HTTP edge -- validation, ids, limits -- which is the same code in every mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = int(os.environ.get("WORLDLOOM_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _common(tmp: Path) -> dict[str, Any]:
    from worldloom.core.bus.inprocess import InProcessBus
    from worldloom.core.settings import HttpSettings, StoreSettings
    from worldloom.core.store.local import LocalStore

    store_settings = StoreSettings(root=tmp / "store")
    return {"store": LocalStore(store_settings.root), "bus": InProcessBus(retry_backoff_s=0.01),
            "store_settings": store_settings, "http": HttpSettings(api_tokens=TOKEN)}


def _schema(app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def ingest_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from worldloom.ingest.app import build_app
    from worldloom.ingest.settings import IngestSettings

    c = _common(tmp_path_factory.mktemp("ingest"))
    yield _schema(build_app(IngestSettings(http=c["http"], store=c["store_settings"]), store=c["store"], bus=c["bus"]))


@pytest.fixture(scope="module")
def curate_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from worldloom.core.vectors import VectorIndex
    from worldloom.curate.app import build_app
    from worldloom.curate.settings import CurateSettings

    tmp = tmp_path_factory.mktemp("curate")
    c = _common(tmp)
    index = VectorIndex(str(tmp / "vectors.db"))
    yield _schema(build_app(CurateSettings(http=c["http"], store=c["store_settings"], consume=False),
                            store=c["store"], bus=c["bus"], index=index))
    index.close()


@pytest.fixture(scope="module")
def search_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from worldloom.core.vectors import VectorIndex
    from worldloom.search.app import build_app
    from worldloom.search.settings import SearchSettings

    tmp = tmp_path_factory.mktemp("search")
    c = _common(tmp)
    index = VectorIndex(str(tmp / "vectors.db"))
    yield _schema(build_app(SearchSettings(http=c["http"], store=c["store_settings"]), store=c["store"],
                            bus=c["bus"], index=index))
    index.close()


@pytest.fixture(scope="module")
def tokenize_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from worldloom.tokenize.app import build_app
    from worldloom.tokenize.settings import TokenizeSettings

    c = _common(tmp_path_factory.mktemp("tokenize"))
    yield _schema(build_app(TokenizeSettings(http=c["http"], store=c["store_settings"], consume=False,
                                             training={"in_process": True, "max_steps": 2}),
                            store=c["store"], bus=c["bus"]))


@pytest.fixture(scope="module")
def train_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from worldloom.train.app import build_app
    from worldloom.train.settings import TrainSettings

    c = _common(tmp_path_factory.mktemp("train"))
    yield _schema(build_app(TrainSettings(http=c["http"], store=c["store_settings"],
                                          training={"in_process": True, "max_steps": 2}),
                            store=c["store"], bus=c["bus"]))


@pytest.fixture(scope="module")
def posttrain_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from worldloom.core.vectors import VectorIndex
    from worldloom.posttrain.app import build_app
    from worldloom.posttrain.settings import PosttrainSettings

    tmp = tmp_path_factory.mktemp("posttrain")
    c = _common(tmp)
    index = VectorIndex(str(tmp / "vectors.db"))
    yield _schema(build_app(PosttrainSettings(http=c["http"], store=c["store_settings"],
                                              training={"in_process": True, "max_steps": 2}),
                            store=c["store"], bus=c["bus"], index=index))
    index.close()


@pytest.fixture(scope="module")
def rlsim_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from worldloom.rlsim.app import build_app
    from worldloom.rlsim.settings import RlsimSettings

    c = _common(tmp_path_factory.mktemp("rlsim"))
    yield _schema(build_app(RlsimSettings(http=c["http"], store=c["store_settings"], rl={"max_real_steps": 2}),
                            store=c["store"], bus=c["bus"]))


def _check(case: Any) -> None:
    response = case.call(headers=AUTH)
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if 400 <= response.status_code < 500:
        body = response.json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), where
        assert isinstance(body["error"]["code"], str) and body["error"]["message"], where


def _fuzz(schema: Any) -> None:
    """Every operation, valid and invalid inputs (schemathesis's positive and negative modes), up to
    ``EXAMPLES`` each; all failures are collected before the test fails, one line per operation."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                _check(case)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing invalid to send (e.g. a GET without parameters)
            except AssertionError as exc:
                failures.append(f"{operation.label} [{mode.value}]: {str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("service", ["ingest", "curate", "search", "tokenize", "train", "posttrain", "rlsim"])
def test_no_5xx_and_one_error_shape(service: str, request: pytest.FixtureRequest) -> None:
    _fuzz(request.getfixturevalue(f"{service}_api"))
