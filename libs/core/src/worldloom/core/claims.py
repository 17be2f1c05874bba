"""Claims with leases in the object store: "one worker does this", across threads, processes and replicas.

A claim is a small JSON object ``{"owner", "expires_at"}`` created with a conditional write
(``ObjectStore.put_bytes_if``: S3 ``If-None-Match: *``), so of several racing claimants exactly one wins.
A holder that dies leaves a claim that expires after its lease; the next claimant takes it over with a
compare-and-swap on its ETag (``If-Match``), so two claimants of an expired claim cannot both win either.
A long task renews its lease; releasing deletes the claim (only the holder does).

Thread locks protect nothing once a second replica runs; these do. The protocol relies on clocks agreeing
to well within a lease (seconds vs. minutes), as leases always do.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from worldloom.core.store.base import ObjectNotFound, ObjectStore


def default_owner() -> str:
    """host:pid:random -- unique per claimant (a restarted process is a new owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Claim:
    key: str
    owner: str
    etag: str
    expires_at: float


class ClaimLost(RuntimeError):
    """The lease ran out and someone else holds the claim now."""


class ClaimBusy(RuntimeError):
    """Another holder kept the claim, working, for longer than the caller would wait."""


T = TypeVar("T")


class Claims:
    def __init__(self, store: ObjectStore, owner: str | None = None, lease_s: float = 300.0) -> None:
        self.store, self.lease_s = store, lease_s
        self.owner = owner or default_owner()

    def _body(self) -> tuple[bytes, float]:
        expires = time.time() + self.lease_s
        return json.dumps({"owner": self.owner, "expires_at": expires}).encode(), expires

    def acquire(self, key: str) -> Claim | None:
        """The claim, or None while another owner holds an unexpired one."""
        body, expires = self._body()
        etag = self.store.put_bytes_if(key, body, None, "application/json")
        if etag is not None:
            return Claim(key, self.owner, etag, expires)
        try:
            raw, current = self.store.read_versioned(key)
        except ObjectNotFound:  # released between our two calls: try once more
            etag = self.store.put_bytes_if(key, body, None, "application/json")
            return Claim(key, self.owner, etag, expires) if etag is not None else None
        try:
            held = json.loads(raw)
            alive = float(held["expires_at"]) > time.time()  # also when it is ours: a claim is one holder, not
            # one process (two threads of one replica must not both hold it)
        except (ValueError, KeyError, TypeError):
            alive = False  # a corrupt claim protects nothing
        if alive:
            return None
        etag = self.store.put_bytes_if(key, body, current, "application/json")
        return Claim(key, self.owner, etag, expires) if etag is not None else None

    def renew(self, claim: Claim) -> Claim:
        body, expires = self._body()
        etag = self.store.put_bytes_if(claim.key, body, claim.etag, "application/json")
        if etag is None:
            raise ClaimLost(f"claim {claim.key} was taken over after its lease ran out")
        claim.etag, claim.expires_at = etag, expires
        return claim

    def release(self, claim: Claim) -> None:
        """Delete the claim if it is still ours (a taken-over claim is left to its new holder)."""
        try:
            _, current = self.store.read_versioned(claim.key)
        except ObjectNotFound:
            return
        if current == claim.etag:
            self.store.delete(claim.key)

    @contextmanager
    def holding(self, key: str, renew_every_s: float | None = None) -> Iterator[Claim | None]:
        """``with claims.holding(key) as claim:`` -- ``claim`` is None when another owner holds it. With
        ``renew_every_s`` a background thread renews the lease while the block runs."""
        claim = self.acquire(key)
        stop = threading.Event()
        renewer = None
        if claim is not None and renew_every_s:
            def keep() -> None:
                while not stop.wait(renew_every_s):
                    try:
                        self.renew(claim)
                    except (ClaimLost, OSError):
                        return
            renewer = threading.Thread(target=keep, name=f"renew-{key}", daemon=True)
            renewer.start()
        try:
            yield claim
        finally:
            stop.set()
            if renewer is not None:
                renewer.join(5)
            if claim is not None:
                self.release(claim)

    def run_once(self, key: str, is_done: Callable[[], bool], work: Callable[[], T], *, wait_s: float = 600.0,
                 poll_s: float = 0.25, renew_every_s: float | None = None) -> T | None:
        """``work()`` by one claimant at a time, and only while ``is_done()`` is false: the effect happens
        once however many threads, processes and replicas ask. Returns work's result, or None when the
        effect is (or got) done elsewhere. A claimant that loses waits for the holder to finish (its
        ``is_done`` turns true) or to die (its lease runs out and the claim passes on); ClaimBusy after
        ``wait_s``. ``work`` must make ``is_done()`` true before it returns (a marker, a record)."""
        deadline = time.monotonic() + wait_s
        while not is_done():
            with self.holding(key, renew_every_s) as claim:
                if claim is not None:
                    return None if is_done() else work()  # the holder before us may have just finished
            if time.monotonic() > deadline:
                raise ClaimBusy(f"{key} is held by another worker for more than {wait_s:.0f} s")
            time.sleep(poll_s)
        return None
