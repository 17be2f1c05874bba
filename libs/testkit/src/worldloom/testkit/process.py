"""A server run as a child process: start, wait until it really answers, stop, show its log.

Each server runs in its own process group (session), so stopping it also kills whatever it spawned,
and every live (or halted) server is stopped by an atexit hook, so a failing or interrupted test run does not
leave brokers behind. (A SIGKILLed parent cannot clean up: `worldloom-servers down` or the pids in
the state dir are the way out then.)
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time; the message carries its log tail."""


def find_executable(name: str) -> str:
    """`name` from the running venv (next to sys.executable) first, then PATH.

    Tests often run as `.venv/bin/pytest` without an activated venv, so PATH alone misses it.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name!r} not found next to {sys.executable} or on PATH")
    return found


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie counts as dead (an init that never reaps is common in containers)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def pid_matches(pid: int, marker: str) -> bool:
    """True if `pid`'s command line mentions `marker`: guards against killing a reused pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc (macOS): trust the pid file
    return marker in cmdline


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(cond: Callable[[], object], timeout_s: float, interval_s: float = 0.02) -> bool:
    """Polls `cond` until it is truthy or timeout_s passed; returns whether it became truthy (tests)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    """Polls ``cond`` until it returns something truthy (returned) or raises AssertionError naming
    ``what`` after ``timeout_s``; an exception from ``cond`` (a server that is down) counts as "not yet"."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if value := cond():
                return value
        except Exception as exc:  # any failure is recorded
            last = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}"
                         + (f" (last error: {last!r})" if last else ""))


def terminate_group(pgid: int, timeout: float, alive: Callable[[], bool],
                    first: signal.Signals = signal.SIGTERM) -> None:
    """Send `first` (SIGTERM) to the process group, SIGKILL it if the leader outlives `timeout`, then
    kill stragglers."""
    _signal_group(pgid, first)
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)


def remove_stray_paths(patterns: list[str]) -> None:
    """Delete leftovers a server writes outside its workdir (unix sockets in /tmp), by glob."""
    for pattern in patterns:
        for path in glob.glob(pattern):
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass


class ManagedProcess:
    """Base for one server process. Subclasses fill in `prepare`, `command` and `is_ready`.

    `workdir` holds config, data and logs; when None a fresh temp dir is made and removed on stop.
    `halt` (an outage) and `kill` (a crash) end the process but keep workdir, ports and data, so the next
    `start` brings the same server back at the same address; `prepare` sees `resuming` then.
    """

    name = "server"
    stop_timeout = 10.0
    poll_interval = 0.2

    def __init__(self, *, workdir: str | os.PathLike[str] | None = None, ready_timeout: float = 60.0) -> None:
        self._given_workdir = Path(workdir).resolve() if workdir is not None else None
        self.workdir: Path | None = None
        self.ready_timeout = ready_timeout
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._launched_at = 0.0
        self._kept = False  # halted or killed: the next launch resumes in the same workdir
        self.launches = 0

    # -- hooks for subclasses -------------------------------------------------------------
    def prepare(self) -> None:
        """Pick ports and write config files into `self.workdir` (runs before launch)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def is_ready(self) -> bool:
        """True once a real client request succeeds; may raise (the error is shown on timeout)."""
        raise NotImplementedError

    def log_files(self) -> list[Path]:
        """Extra log files (besides stdout) worth showing when start-up fails."""
        return []

    def stray_paths(self) -> list[str]:
        """Glob patterns of files the server leaves outside its workdir; removed after stop."""
        return []

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def resuming(self) -> bool:
        """True while (re)launching after `halt` or `kill`: keep the ports, config and data already there."""
        return self._kept
    @property
    def stdout_path(self) -> Path:
        assert self.workdir is not None, "not started"
        return self.workdir / "stdout.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> Self:
        """Spawn the process without waiting for it (lets callers start several in parallel)."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        if self._kept:
            assert self.workdir is not None
        elif self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = self._given_workdir
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"worldloom-{self.name}-"))
        try:
            self.prepare()
            self._log = open(self.stdout_path, "ab")
            self._launched_at = time.monotonic()
            self.launches += 1
            self._proc = subprocess.Popen(
                self.command(), cwd=self.workdir, env=self.environment(), stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            self._kept = False
            with _live_lock:
                _live.add(self)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> Self:
        """Poll `is_ready` until it succeeds; on exit or timeout stop everything and raise with the log tail."""
        assert self._proc is not None, "launch() first"
        deadline = self._launched_at + self.ready_timeout
        last_error: BaseException | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                self._fail(f"exited with code {code}", last_error)
            try:
                # poll() again: a probe can be answered by someone else holding a port we failed to bind.
                if self.is_ready() and self._proc.poll() is None:
                    self.startup_seconds = time.monotonic() - self._launched_at
                    return self
            except Exception as exc:  # any client error just means "not yet"
                last_error = exc
            if time.monotonic() > deadline:
                self._fail(f"not ready after {self.ready_timeout:.0f}s", last_error)
            time.sleep(self.poll_interval)

    def _fail(self, reason: str, last_error: BaseException | None) -> None:
        probe = f"\nlast readiness probe error: {last_error!r}" if last_error else ""
        message = f"{self.name} failed to start: {reason}{probe}\n{self.log_tail()}"
        self.stop()
        raise ServerStartError(message)

    def start(self) -> Self:
        """Launch and block until the server answers real requests."""
        try:
            return self.launch().wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the process group, remove strays and (if we made it) the workdir. Idempotent."""
        self._end(graceful=True)
        with _live_lock:
            _live.discard(self)
        self._kept = False
        if self._given_workdir is None and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def halt(self) -> None:
        """Stop the process as `stop` does (SIGTERM, then SIGKILL) but keep its workdir, ports and data:
        an outage that `start` ends with the same server at the same address."""
        self._end(graceful=True)
        self._kept = self.workdir is not None

    def kill(self) -> None:
        """SIGKILL the process group at once, as a crash would (no shutdown hook runs); like `halt`, the
        workdir, ports and data stay for the next `start`."""
        self._end(graceful=False)
        self._kept = self.workdir is not None

    def freeze(self) -> None:
        """SIGSTOP the process group: it stops exactly where it is (a test then inspects what it wrote so
        far, and kills it or lets it go on with `thaw`)."""
        assert self._proc is not None, "not started"
        _signal_group(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        assert self._proc is not None, "not started"
        _signal_group(self._proc.pid, signal.SIGCONT)

    def _end(self, graceful: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if graceful:
                _signal_group(proc.pid, signal.SIGCONT)  # a frozen process could not handle SIGTERM
                terminate_group(proc.pid, self.stop_timeout, lambda: proc.poll() is None)
            else:
                terminate_group(proc.pid, 0.0, lambda: proc.poll() is None, first=signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        remove_stray_paths(self.stray_paths())

    def detach(self) -> dict[str, Any]:
        """Leave the server running after this process exits; returns what `stop_detached` needs."""
        assert self._proc is not None and self.workdir is not None, "not started"
        record = {"pid": self._proc.pid, "workdir": str(self.workdir), "strays": self.stray_paths(),
                  "stop_timeout": self.stop_timeout}
        with _live_lock:
            _live.discard(self)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return record

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of stdout and the server's own logs, for error messages."""
        parts = []
        if self.workdir is not None:
            for path in [self.stdout_path, *self.log_files()]:
                parts.append(f"--- {path} (last {lines} lines) ---\n{_tail(path, lines)}")
        return "\n".join(parts)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} workdir={self.workdir}>"


def stop_detached(record: dict[str, Any]) -> bool:
    """Stop a server left running by `detach` (possibly by another process). True if it was running."""
    pid, workdir = int(record["pid"]), record["workdir"]
    was_running = pid_alive(pid) and pid_matches(pid, workdir)
    if was_running:
        terminate_group(pid, float(record.get("stop_timeout", 10.0)), lambda: pid_alive(pid))
    remove_stray_paths(list(record.get("strays", [])))
    return was_running


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _stop_all_live() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        try:
            server.stop()
        except Exception:  # best effort at interpreter exit
            pass


atexit.register(_stop_all_live)
