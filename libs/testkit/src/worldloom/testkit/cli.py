"""`worldloom-servers up|down --state-dir DIR`: Kafka, S3 and Milvus in the background for local dev.

`up` starts all three detached, writes DIR/env (source it, or `eval "$(worldloom-servers up ...)"`:
pytest's fixtures then reuse these servers) and DIR/pids.json; `down` stops them and removes
their data.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from worldloom.testkit.kafka import KafkaServer
from worldloom.testkit.milvus import MilvusServer
from worldloom.testkit.process import ServerStartError, pid_alive, pid_matches, stop_detached
from worldloom.testkit.s3 import S3Server

PIDS = "pids.json"
ENV = "env"


def _servers(state_dir: Path) -> tuple[KafkaServer, S3Server, MilvusServer]:
    return (KafkaServer(workdir=state_dir / "kafka"), S3Server(workdir=state_dir / "s3"),
            MilvusServer(workdir=state_dir / "milvus"))


def _env_lines(kafka: KafkaServer, s3: S3Server, milvus: MilvusServer) -> str:
    values = {
        "WORLDLOOM_TEST_KAFKA_BOOTSTRAP": kafka.bootstrap_servers,
        "WORLDLOOM_TEST_S3_ENDPOINT": s3.endpoint,
        "WORLDLOOM_TEST_S3_ACCESS_KEY": s3.access_key,
        "WORLDLOOM_TEST_S3_SECRET_KEY": s3.secret_key,
        "WORLDLOOM_TEST_MILVUS_URI": milvus.uri,
    }
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_records(state_dir: Path) -> dict[str, dict]:
    try:
        return json.loads((state_dir / PIDS).read_text())
    except FileNotFoundError:
        return {}


def _abort(servers: tuple[KafkaServer, S3Server, MilvusServer]) -> None:
    for server in servers:
        server.stop()
        if server.workdir is not None:
            shutil.rmtree(server.workdir, ignore_errors=True)


def up(state_dir: Path) -> int:
    """Start all servers in parallel, detach them, write env + pids; on any failure stop them all."""
    state_dir.mkdir(parents=True, exist_ok=True)
    stale = _read_records(state_dir)
    if any(pid_alive(int(r["pid"])) and pid_matches(int(r["pid"]), r["workdir"]) for r in stale.values()):
        print(f"servers from {state_dir} are still running; run `worldloom-servers down` first", file=sys.stderr)
        return 1
    for record in stale.values():  # left by an unclean shutdown: ours to remove
        shutil.rmtree(record["workdir"], ignore_errors=True)
    servers = _servers(state_dir)
    for server in servers:
        workdir = state_dir / server.name
        if workdir.exists() and any(workdir.iterdir()):
            print(f"{workdir} is not empty and not from a previous `up`; remove it first", file=sys.stderr)
            return 1
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
    except (ServerStartError, OSError, RuntimeError) as exc:
        _abort(servers)
        print(f"worldloom-servers up failed: {exc}", file=sys.stderr)
        return 1
    except BaseException:
        _abort(servers)
        raise
    env = _env_lines(*servers)
    records = {server.name: server.detach() for server in servers}
    _write(state_dir / PIDS, json.dumps(records, indent=2))
    _write(state_dir / ENV, env)
    for server in servers:
        print(f"# {server.name}: pid {records[server.name]['pid']}, ready in {server.startup_seconds:.1f}s",
              file=sys.stderr)
    print(env, end="")
    return 0


def down(state_dir: Path) -> int:
    """Stop what `up` started (checking each pid still is our server) and remove its data."""
    records = _read_records(state_dir)
    if not records:
        print(f"nothing to stop in {state_dir}", file=sys.stderr)
    for name, record in records.items():
        stopped = stop_detached(record)
        print(f"# {name}: {'stopped' if stopped else 'was not running'}", file=sys.stderr)
        shutil.rmtree(record["workdir"], ignore_errors=True)
    for leftover in (PIDS, ENV):
        (state_dir / leftover).unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="worldloom-servers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command, help_text in (("up", "start Kafka, S3 and Milvus in the background"), ("down", "stop them")):
        p = sub.add_parser(command, help=help_text)
        p.add_argument("--state-dir", type=Path, default=Path(".worldloom/servers"),
                       help="where env, pids.json and server data live (default: .worldloom/servers)")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    return up(state_dir) if args.command == "up" else down(state_dir)


if __name__ == "__main__":
    sys.exit(main())
