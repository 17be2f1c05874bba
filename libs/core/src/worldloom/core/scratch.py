"""Scratch files in the temp dir, named so that a restart can clean up after a killed process.

A process killed with SIGKILL (or by the OOM killer) runs no ``finally``: its temporary directories stay
behind, and a service restarted in the same pod (an emptyDir /tmp survives container restarts) never
removes them. Every service names its scratch entries ``wl-<what>-<pid>.<start>-...`` (``scratch_prefix``),
where <start> is the process's start time, so a new process that got the old pid (pid 1 in a container)
is told apart; ``remove_stale_scratch`` at start-up deletes the entries of processes that are gone.
``without_paths`` keeps those locations out of what callers are told.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("worldloom.scratch")

_ENTRY = re.compile(r"^wl-[a-z]+-(\d+)\.(\d+)-")


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the parenthesised command name


def scratch_prefix(what: str) -> str:
    """``prefix=`` for tempfile: ``wl-<what>-<pid>.<start>-``; ``what`` is lowercase letters."""
    if not what.isalpha() or not what.islower():
        raise ValueError(f"scratch kind must be lowercase letters, not {what!r}")
    pid = os.getpid()
    return f"wl-{what}-{pid}.{_start_time(pid) or 0}-"


def remove_stale_scratch(directory: str | None = None) -> list[str]:
    """Deletes the scratch entries of processes that no longer run; returns their names."""
    root = Path(directory or tempfile.gettempdir())
    removed: list[str] = []
    if _start_time(os.getpid()) is None:  # no /proc: liveness cannot be told, so nothing is removed
        return removed
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        m = _ENTRY.match(entry.name)
        if m is None or _start_time(int(m.group(1))) == m.group(2):
            continue  # not ours, or its process still runs
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
        except OSError as exc:  # another replica on this host removed it first, or it is not ours to remove
            log.debug("could not remove %s: %s", entry.path, exc)
    if removed:
        log.info("removed %d scratch entries left by stopped processes", len(removed))
    return removed


_TEMP = re.compile(r"(?:file://)?" + re.escape(tempfile.gettempdir().rstrip("/")) + r"/[^\s'\",;)\]]*")


def without_paths(text: str) -> str:
    """``text`` with the server's temporary paths replaced by ``<temp file>``: a caller learns what failed,
    not where the server keeps its scratch files."""
    return _TEMP.sub("<temp file>", text)
