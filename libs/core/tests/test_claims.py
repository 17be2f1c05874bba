"""Conditional writes and claims: exactly one winner among real processes racing, on the real S3 server
(SeaweedFS) and on the local store; an expired claim is taken over by exactly one of its racers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from worldloom.core.claims import ClaimLost, Claims
from worldloom.core.settings import StoreSettings
from worldloom.core.store.factory import make_store
from worldloom.core.store.local import LocalStore

WORKER = Path(__file__).with_name("claim_worker.py")


def _run_race(settings: dict[str, Any], key: str, n: int) -> int:
    """``n`` separate processes try to claim ``key`` at the same moment; returns how many won."""
    start_at = time.time() + 4.0  # interpreter start-up is slow on a busy machine
    procs = [subprocess.Popen([sys.executable, str(WORKER), json.dumps(settings, default=str), key, str(start_at)],
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(o in ("won", "lost") for o in outs), outs
    return outs.count("won")


def _payload(settings: StoreSettings) -> dict[str, Any]:
    from worldloom.core.jobs import store_settings_payload

    return store_settings_payload(settings)


def _check_store(store: Any) -> None:
    assert store.put_bytes_if("c/one", b"a", None) is not None
    assert store.put_bytes_if("c/one", b"b", None) is None  # exists: not created again
    data, etag = store.read_versioned("c/one")
    assert data == b"a"
    new = store.put_bytes_if("c/one", b"c", etag)
    assert new is not None and new != etag and store.get_bytes("c/one") == b"c"
    assert store.put_bytes_if("c/one", b"d", etag) is None  # stale ETag: refused, nothing written
    assert store.get_bytes("c/one") == b"c"
    assert store.put_bytes_if("c/gone", b"x", etag) is None  # If-Match on a missing object


def test_local_store_conditional_writes_and_process_race(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    _check_store(store)
    settings = _payload(StoreSettings(root=tmp_path / "s"))
    for i in range(2):
        assert _run_race(settings, f"claims/race-{i}", 4) == 1


@pytest.mark.integration
def test_s3_conditional_writes_and_process_races(s3_settings) -> None:
    store = make_store(s3_settings)
    _check_store(store)
    settings = _payload(s3_settings)
    for i in range(3):
        assert _run_race(settings, f"claims/race-{i}", 4) == 1
    # an expired claim: all racers see it expired, exactly one takes it over (If-Match on its ETag)
    for i in range(2):
        key = f"claims/expired-{i}"
        store.put_bytes(key, json.dumps({"owner": "dead:1", "expires_at": time.time() - 1}).encode())
        assert _run_race(settings, key, 4) == 1


def test_claim_lifecycle(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    a, b = Claims(store, owner="a", lease_s=0.3), Claims(store, owner="b", lease_s=0.3)
    claim = a.acquire("k")
    assert claim is not None and b.acquire("k") is None
    a.renew(claim)
    time.sleep(0.4)  # a's lease runs out: b takes over, a cannot renew or release b's claim
    taken = b.acquire("k")
    assert taken is not None
    with pytest.raises(ClaimLost):
        a.renew(claim)
    a.release(claim)
    assert store.exists("k") and a.acquire("k") is None
    b.release(taken)
    assert not store.exists("k")
    with a.holding("k", renew_every_s=0.1) as held:
        assert held is not None
        time.sleep(0.5)  # renewed in the background: still ours past the lease
        assert b.acquire("k") is None
    assert not store.exists("k")
    store.put_bytes("k", b"not json")  # a corrupt claim protects nothing
    assert b.acquire("k") is not None
