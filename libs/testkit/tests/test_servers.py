"""Each server for real: start it, do a client round trip, stop it and check nothing is left behind."""

from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from worldloom.testkit.kafka import KafkaServer
from worldloom.testkit.milvus import MilvusServer
from worldloom.testkit.ports import port_open
from worldloom.testkit.process import find_executable, pid_alive
from worldloom.testkit.s3 import S3Server

pytestmark = pytest.mark.integration


def _assert_gone(pid: int, workdir: Path, port: int) -> None:
    assert not pid_alive(pid)
    assert not workdir.exists()
    assert not port_open(port)


def test_kafka_produce_consume() -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    with KafkaServer() as kafka:
        assert kafka.bootstrap_servers == f"127.0.0.1:{kafka.port}"
        topic = f"t-{uuid.uuid4().hex[:8]}"
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
        producer.send(topic, key=b"k", value=b"hello").get(timeout=20)
        producer.close()
        consumer = KafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, group_id="g1",
                                 auto_offset_reset="earliest", consumer_timeout_ms=20000)
        message = next(iter(consumer))
        consumer.close()
        assert (message.key, message.value) == (b"k", b"hello")
        pid, workdir, port = kafka.pid, kafka.workdir, kafka.port
    assert pid is not None and workdir is not None
    _assert_gone(pid, workdir, port)


def _read(client, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def test_s3_bucket_put_get() -> None:
    from minio import Minio
    from minio.error import S3Error

    with S3Server() as s3:
        assert s3.endpoint == f"127.0.0.1:{s3.port}"
        client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
        client.make_bucket("testkit-bucket")
        client.put_object("testkit-bucket", "a/b.txt", io.BytesIO(b"payload"), 7, content_type="text/plain")
        assert _read(client, "testkit-bucket", "a/b.txt") == b"payload"
        intruder = Minio(s3.endpoint, access_key=s3.access_key, secret_key="wrong", secure=False)
        with pytest.raises(S3Error):
            intruder.list_buckets()  # the identity in s3.json is enforced
        pid, workdir, grpc_ports = s3.pid, s3.workdir, [p for k, p in s3.ports.items() if k.endswith(".grpc")]
        port = s3.port
    assert pid is not None and workdir is not None
    _assert_gone(pid, workdir, port)
    assert not [s for p in grpc_ports for s in glob.glob(f"/tmp/seaweedfs-*-{p}.sock")]


def test_milvus_insert_flush_search() -> None:
    from pymilvus import MilvusClient

    with MilvusServer() as milvus:
        assert milvus.uri == f"http://127.0.0.1:{milvus.port}"
        client = MilvusClient(uri=milvus.uri)
        client.create_collection("testkit", dimension=4)
        client.insert("testkit", [{"id": 1, "vector": [1.0, 0.0, 0.0, 0.0]},
                                  {"id": 2, "vector": [0.0, 1.0, 0.0, 0.0]}])
        client.flush("testkit")
        hits = client.search("testkit", data=[[0.0, 0.9, 0.1, 0.0]], limit=1)
        client.close()
        assert hits[0][0]["id"] == 2
        pid, workdir, port = milvus.pid, milvus.workdir, milvus.port
    assert pid is not None and workdir is not None
    _assert_gone(pid, workdir, port)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        base = [find_executable("worldloom-servers")]
    except FileNotFoundError:
        base = [sys.executable, "-m", "worldloom.testkit.cli"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=180)


def _parse_env(text: str) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in text.splitlines() if line.strip())
    return {key: value for key, value in pairs}


def test_cli_up_down(tmp_path: Path) -> None:
    import json

    from minio import Minio
    from pymilvus import MilvusClient

    state = tmp_path / "state"
    up = _cli("up", "--state-dir", str(state))
    try:
        assert up.returncode == 0, up.stderr
        env = _parse_env((state / "env").read_text())
        assert up.stdout == (state / "env").read_text()
        assert set(env) == {"WORLDLOOM_TEST_KAFKA_BOOTSTRAP", "WORLDLOOM_TEST_S3_ENDPOINT",
                            "WORLDLOOM_TEST_S3_ACCESS_KEY", "WORLDLOOM_TEST_S3_SECRET_KEY", "WORLDLOOM_TEST_MILVUS_URI"}
        pids = {name: rec["pid"] for name, rec in json.loads((state / "pids.json").read_text()).items()}
        assert all(pid_alive(pid) for pid in pids.values())

        # The servers outlive the `up` process and answer real clients.
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=env["WORLDLOOM_TEST_KAFKA_BOOTSTRAP"])
        assert admin.describe_cluster()["brokers"]
        admin.close()
        s3 = Minio(env["WORLDLOOM_TEST_S3_ENDPOINT"], access_key=env["WORLDLOOM_TEST_S3_ACCESS_KEY"],
                   secret_key=env["WORLDLOOM_TEST_S3_SECRET_KEY"], secure=False)
        assert s3.list_buckets() == []
        milvus = MilvusClient(uri=env["WORLDLOOM_TEST_MILVUS_URI"])
        assert milvus.list_collections() == []
        milvus.close()

        again = _cli("up", "--state-dir", str(state))
        assert again.returncode == 1 and "still running" in again.stderr
    finally:
        down = _cli("down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids.values())
    assert sorted(os.listdir(state)) == []
    assert not port_open(int(env["WORLDLOOM_TEST_S3_ENDPOINT"].rsplit(":", 1)[1]))


def test_kafka_halt_and_start_keep_address_and_messages() -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    with KafkaServer() as kafka:
        bootstrap, topic = kafka.bootstrap_servers, "kept"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send(topic, value=b"before").get(timeout=20)
        producer.close()
        kafka.halt()
        assert not port_open(kafka.port) and kafka.workdir is not None and kafka.workdir.exists()
        kafka.start()
        assert kafka.bootstrap_servers == bootstrap
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send(topic, value=b"after").get(timeout=20)
        producer.close()
        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=10000)
        assert [m.value for m in consumer] == [b"before", b"after"]
        consumer.close()


def test_s3_kill_and_start_keep_address_and_objects() -> None:
    from minio import Minio

    with S3Server() as s3:
        endpoint = s3.endpoint
        client = Minio(endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
        client.make_bucket("kept")
        client.put_object("kept", "a.txt", io.BytesIO(b"payload"), 7)
        s3.kill()
        assert not port_open(s3.port)
        s3.start()
        assert s3.endpoint == endpoint
        assert _read(client, "kept", "a.txt") == b"payload"
