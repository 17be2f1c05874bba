"""Kill one Ray Train worker of a running job, for resume tests, without leaking Ray into later tests.

Why a helper: a kill test that failed half-way used to leave its job and its Ray driver running; a later
worker death then took the whole pytest process down with it, so CI lost every result after that test.
Here the job runs on a fresh private Ray cluster and Ray is always shut down, pass or fail.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable


def kill_a_worker(run: Callable[[], None], worker_pids_after_checkpoint: Callable[[], list[int] | None], *,
                  find_s: float = 300.0, finish_s: float = 420.0) -> int:
    """Runs ``run`` (a blocking Ray Train job) in a thread; once ``worker_pids_after_checkpoint()`` returns
    the pids of a group that has saved a checkpoint, SIGKILLs the last of them; waits for ``run`` to end.
    Returns the killed pid; raises AssertionError if no worker could be killed or the job did not finish,
    and re-raises what ``run`` raised."""
    import ray

    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    ray.shutdown()  # a fresh private cluster for this job
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    killed = None
    try:
        deadline = time.monotonic() + find_s
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            pids = worker_pids_after_checkpoint()
            if pids:
                try:
                    os.kill(pids[-1], signal.SIGKILL)
                    killed = pids[-1]
                except ProcessLookupError:  # that group already ended (finished or restarted): look again
                    pass
            time.sleep(0.2)
        assert killed is not None, "no worker of the job could be killed after a checkpoint"
        thread.join(timeout=finish_s)
        assert not thread.is_alive(), f"the job did not finish within {finish_s:.0f} s of the kill"
        if errors:
            raise errors[0]
        return killed
    finally:
        ray.shutdown()  # also stops a job left running by a failed assertion
        thread.join(timeout=60)
