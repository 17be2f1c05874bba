"""A separate process racing for a claim: ``python claim_worker.py SETTINGS_JSON KEY START_AT`` prints
``won`` or ``lost`` (tests start several at once against the same store)."""

from __future__ import annotations

import json
import sys
import time

from worldloom.core.claims import Claims
from worldloom.core.settings import StoreSettings
from worldloom.core.store.factory import make_store


def main() -> None:
    settings, key, start_at = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    claims = Claims(make_store(StoreSettings(**settings)), lease_s=30)
    while time.time() < start_at:  # every racer fires at the same moment
        time.sleep(0.001)
    print("won" if claims.acquire(key) is not None else "lost", flush=True)


if __name__ == "__main__":
    main()
