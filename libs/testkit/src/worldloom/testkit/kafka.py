"""Apache Kafka 4.1.1 as a single KRaft node (broker+controller) on 127.0.0.1, run straight from jars.

No Docker and no Kafka distribution: Maven fetches the broker jars once into a cache dir
(libs/testkit/kafka/pom.xml), and we run `java -cp 'libs/*' kafka.Kafka` ourselves.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from worldloom.testkit.ports import LOOPBACK, free_port, port_open
from worldloom.testkit.process import ManagedProcess

KAFKA_VERSION = "4.1.1"
_PACKAGE_DIR = Path(__file__).resolve().parent
POM = _PACKAGE_DIR.parents[2] / "kafka" / "pom.xml"  # libs/testkit/kafka/pom.xml

_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}"><PatternLayout pattern="[%d] %p %m (%c)%n"/></File>
  </Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="file"/></Root></Loggers>
</Configuration>
"""


def repo_root() -> Path:
    """The workspace root (the folder with uv.lock above this package)."""
    for parent in _PACKAGE_DIR.parents:
        if (parent / "uv.lock").is_file():
            return parent
    return _PACKAGE_DIR.parents[4]


def cache_dir() -> Path:
    """$WORLDLOOM_CACHE_DIR, else <repo>/.cache: downloads that outlive one test run."""
    env = os.environ.get("WORLDLOOM_CACHE_DIR")
    return Path(env) if env else repo_root() / ".cache"


def ensure_kafka_jars(libs_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return a dir with the Kafka broker jars, fetching them with Maven only if missing or stale.

    A `.complete` marker holding the pom's hash makes half-finished downloads and version bumps
    refetch; a file lock keeps parallel test runs from fetching at once.
    """
    libs = Path(libs_dir) if libs_dir is not None else cache_dir() / "kafka" / "libs"
    stamp = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    marker = libs / ".complete"

    def fresh() -> bool:
        return marker.is_file() and marker.read_text().strip() == stamp

    if fresh():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / f".{libs.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if fresh():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise FileNotFoundError("Maven ('mvn') is needed once to fetch the Kafka jars; it is not on PATH")
        staging = Path(tempfile.mkdtemp(prefix=f".{libs.name}-", dir=libs.parent))
        try:
            result = subprocess.run(
                [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                 f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
                capture_output=True, text=True, timeout=900,
            )
            if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
                raise RuntimeError(f"fetching Kafka jars failed (mvn exit {result.returncode}):\n"
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
            (staging / ".complete").write_text(stamp)
            shutil.rmtree(libs, ignore_errors=True)
            staging.rename(libs)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return libs


def find_java() -> str:
    """`java` from $JAVA_HOME, else PATH (Kafka 4.x brokers need Java 17+)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise FileNotFoundError("'java' (17+) not found: set JAVA_HOME or put it on PATH")
    return java


def cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in url-safe base64 without padding.

    Drawn as Kafka's own Uuid.randomUuid() does: an id starting with '-' (1 draw in 64) is drawn
    again, because the storage tool would read it as a command-line option and refuse to format.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


class KafkaServer(ManagedProcess):
    """One KRaft node; `bootstrap_servers` is "127.0.0.1:PORT". Topics are not auto-created."""

    name = "kafka"
    stop_timeout = 15.0

    def __init__(self, *, port: int | None = None, controller_port: int | None = None, heap: str = "512m",
                 properties: dict[str, str] | None = None, jars_dir: str | os.PathLike[str] | None = None,
                 workdir: str | os.PathLike[str] | None = None, ready_timeout: float = 60.0) -> None:
        super().__init__(workdir=workdir, ready_timeout=ready_timeout)
        self._want_port, self._want_controller_port = port, controller_port
        self.port = 0
        self.controller_port = 0
        self.heap = heap
        self.extra_properties = dict(properties or {})
        self._jars_dir = jars_dir
        self.jars: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _java(self, main: str, *args: str) -> list[str]:
        assert self.workdir is not None and self.jars is not None
        return [
            find_java(), "-Xms64m", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData", "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.xml'}",
            "-cp", f"{self.jars}/*", main, *args,
        ]

    def server_properties(self) -> dict[str, str]:
        """The server.properties we run with (after ports are picked)."""
        assert self.workdir is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        props.update(self.extra_properties)
        return props

    def prepare(self) -> None:
        assert self.workdir is not None
        self.jars = ensure_kafka_jars(self._jars_dir)
        if self.resuming:  # after halt/kill: same ports, config and formatted log dirs
            return
        self.port = self._want_port or free_port()
        self.controller_port = self._want_controller_port or free_port()
        (self.workdir / "log4j2.xml").write_text(_LOG4J2.format(log=self.workdir / "kafka.log"))
        config = self.workdir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.server_properties().items()))
        # 4.x dynamic quorum: --standalone makes this node the sole voter (pairs with
        # controller.quorum.bootstrap.servers; the older controller.quorum.voters form takes no flag).
        fmt = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(config), "--standalone"),
            cwd=self.workdir, capture_output=True, text=True, timeout=120,
        )
        if fmt.returncode != 0:
            raise RuntimeError(f"kafka storage format failed ({fmt.returncode}):\n{fmt.stdout}\n{fmt.stderr}")

    def command(self) -> list[str]:
        assert self.workdir is not None
        return self._java("kafka.Kafka", str(self.workdir / "server.properties"))

    def log_files(self) -> list[Path]:
        assert self.workdir is not None
        return [self.workdir / "kafka.log"]

    def is_ready(self) -> bool:
        if not port_open(self.port):
            return False
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id="worldloom-testkit-probe",
                                 bootstrap_timeout_ms=3000, request_timeout_ms=3000)
        try:
            return bool(admin.describe_cluster().get("brokers"))
        finally:
            admin.close()
