"""Session fixtures: real Kafka, S3 and Milvus servers on 127.0.0.1 (started once, stopped at the end).

Set WORLDLOOM_TEST_KAFKA_BOOTSTRAP / WORLDLOOM_TEST_S3_ENDPOINT (+ _ACCESS_KEY/_SECRET_KEY) /
WORLDLOOM_TEST_MILVUS_URI to reuse servers started with `worldloom-servers up`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
# An in-process Ray driver whose private cluster is gone (a job thread's cluster stopped under it) waits this
# long for the GCS before Ray ends the whole process; the default 60 s ended green runs with exit 1
os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "3600")
SHARED_DATA = Path(os.environ.get("WORLDLOOM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _ray_shut_down_at_the_end() -> Iterator[None]:
    """Stops the Ray cluster an in-process job started while everything is still running: left to the
    interpreter's exit, Ray's core worker can outlive its GCS, wait 60 s for it and end the run with an error
    after every test passed."""
    import sys

    yield
    if (ray := sys.modules.get("ray")) is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (set WORLDLOOM_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if env := os.environ.get("WORLDLOOM_TEST_KAFKA_BOOTSTRAP"):
        yield env
        return
    from worldloom.testkit.kafka import KafkaServer

    with KafkaServer() as server:
        yield server.bootstrap_servers


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    if env := os.environ.get("WORLDLOOM_TEST_S3_ENDPOINT"):
        yield {
            "endpoint": env,
            "access_key": os.environ["WORLDLOOM_TEST_S3_ACCESS_KEY"],
            "secret_key": os.environ["WORLDLOOM_TEST_S3_SECRET_KEY"],
        }
        return
    from worldloom.testkit.s3 import S3Server

    with S3Server() as server:
        yield {"endpoint": server.endpoint, "access_key": server.access_key, "secret_key": server.secret_key}


@pytest.fixture(scope="session")
def milvus_uri() -> Iterator[str]:
    if env := os.environ.get("WORLDLOOM_TEST_MILVUS_URI"):
        yield env
        return
    from worldloom.testkit.milvus import MilvusServer

    with MilvusServer() as server:
        yield server.uri


@pytest.fixture
def s3_settings(s3_server):
    """StoreSettings for a fresh bucket per test, so tests never see each other's objects."""
    from worldloom.core.settings import StoreSettings

    return StoreSettings(
        kind="s3", endpoint=s3_server["endpoint"], bucket=f"t-{uuid.uuid4().hex[:12]}",
        access_key=s3_server["access_key"], secret_key=s3_server["secret_key"], part_size=5 * 1024 * 1024,
    )


@pytest.fixture
def kafka_settings(kafka_bootstrap):
    from worldloom.core.settings import BusSettings

    return BusSettings(
        kind="kafka", bootstrap_servers=kafka_bootstrap, partitions=2,
        client_id=f"test-{uuid.uuid4().hex[:6]}", retry_backoff_s=0.01,
    )


@pytest.fixture
def unique_topic() -> str:
    return f"test.{uuid.uuid4().hex[:10]}"
