"""ManagedProcess with throwaway Python children: failure reporting and process-group cleanup."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from worldloom.testkit import process
from worldloom.testkit.ports import free_port, free_port_pair
from worldloom.testkit.process import ManagedProcess, ServerStartError, pid_alive


class _Script(ManagedProcess):
    name = "script"
    stop_timeout = 2.0

    def __init__(self, code: str, ready_file: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.code, self.ready_file = code, ready_file

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.code]

    def is_ready(self) -> bool:
        assert self.workdir is not None
        return self.ready_file is not None and (self.workdir / self.ready_file).exists()


def test_exit_during_start_raises_with_log_tail_and_cleans_up() -> None:
    server = _Script("import sys; print('boom: bad config', flush=True); sys.exit(3)")
    with pytest.raises(ServerStartError, match="exited with code 3") as err:
        server.start()
    assert "boom: bad config" in str(err.value)
    assert server.workdir is not None and not server.workdir.exists()
    assert server not in process._live


def test_timeout_raises_and_kills() -> None:
    server = _Script("import time; time.sleep(60)", ready_timeout=0.5)
    with pytest.raises(ServerStartError, match="not ready after"):
        server.start()
    assert server.pid is None


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    grandchild_pid = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time, pathlib\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time, signal; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        f"pathlib.Path({str(grandchild_pid)!r}).write_text(str(p.pid))\n"
        "pathlib.Path('ready').touch()\n"
        "time.sleep(60)\n"
    )
    with _Script(code, ready_file="ready", workdir=tmp_path / "work") as server:
        assert server.running
        grandchild = int(grandchild_pid.read_text())
        assert pid_alive(grandchild)
    deadline = time.monotonic() + 5
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild)  # ignored SIGTERM, got SIGKILL with the group
    assert (tmp_path / "work").exists()  # a given workdir is kept


def test_free_ports_are_distinct() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    low, high = free_port_pair(10000)
    assert high == low + 10000 and not {low, high} & ports


def test_kill_and_halt_keep_the_workdir_for_the_next_start(tmp_path: Path) -> None:
    # each launch appends its pid to a file in the workdir; a crash (kill) and an outage (halt) keep it
    code = ("import os, pathlib, time\n"
            "with open('pids', 'a') as f: f.write(f'{os.getpid()}\\n')\n"
            "pathlib.Path('ready').touch()\n"
            "time.sleep(60)\n")
    server = _Script(code, ready_file="ready")
    try:
        server.start()
        workdir, first = server.workdir, server.pid
        assert workdir is not None and first is not None
        (workdir / "ready").unlink()
        server.kill()
        assert not pid_alive(first) and workdir.exists() and server.resuming
        assert server in process._live  # a halted server is still stopped at exit
        server.start()
        assert server.workdir == workdir and server.pid != first and not server.resuming
        (workdir / "ready").unlink()
        server.halt()
        server.start()
        pids = (workdir / "pids").read_text().split()
        assert server.launches == 3 and len(set(pids)) == 3 and pids[0] == str(first)
    finally:
        server.stop()
    assert not workdir.exists() and not server.resuming and server not in process._live


def test_freeze_stops_the_process_where_it_is_and_thaw_lets_it_go_on() -> None:
    code = ("import pathlib, time\n"
            "pathlib.Path('ready').touch()\n"
            "n = 0\n"
            "while True:\n"
            "    n += 1; pathlib.Path('count').write_text(str(n)); time.sleep(0.01)\n")
    with _Script(code, ready_file="ready") as server:
        assert server.workdir is not None
        count = server.workdir / "count"
        server.freeze()
        time.sleep(0.2)  # a write in flight lands
        frozen = count.read_text()
        time.sleep(0.3)
        assert count.read_text() == frozen
        server.thaw()
        assert process.wait_until(lambda: count.read_text() not in ("", frozen), 5)
