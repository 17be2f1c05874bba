"""Free loopback ports, so parallel test runs and dev servers never fight over fixed defaults."""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

# Ports handed out by this process: the OS may return a port again as soon as its probe socket is
# closed, and a server needing five ports must not get the same one twice before it binds them.
_given: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not yet handed out by this process."""
    with _lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = sock.getsockname()[1]
            if port not in _given:
                _given.add(port)
                return port
    raise RuntimeError("could not find a free port on 127.0.0.1")


def free_port_pair(offset: int) -> tuple[int, int]:
    """Free ports (p, p + offset): for servers that derive one port from another (SeaweedFS gRPC = HTTP + 10000)."""
    with _lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = sock.getsockname()[1]
            other = port + offset
            if not 0 < other < 65536 or {port, other} & _given or not _bindable(other):
                continue
            _given.update((port, other))
            return port, other
    raise RuntimeError(f"could not find free ports p, p+{offset} on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports."""
    return [free_port() for _ in range(count)]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port (cheap readiness pre-check)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
