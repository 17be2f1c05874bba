"""kill -9 of the rlsim service mid-experiment (`python -m worldloom.rlsim` as a child process on a local
store): the restarted service resumes the experiment from its last finished iteration and finishes it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from worldloom.core.store.local import LocalStore
from worldloom.testkit.process import wait_for
from worldloom.testkit.services import ServiceProcess

TOKEN = "rlsim-kill-token"
REQ = dict(
    env_id="CartPole-v1",
    resolution=32,
    steps=240,
    warmup_steps=60,
    steps_per_iteration=60,
    max_episode_steps=50,
    eval_episodes=1,
    seed=5,
    world_model=dict(
        family="ar",
        size="tiny",
        config=dict(n_layer=1, d_model=32, n_head=2),
        tokenizer=dict(size="tiny", channels=16, steps=2, batch=2),
        updates=3,
        batch=2,
    ),
    agent=dict(hidden=32, layers=1, updates=3, imagined_envs=4, horizon=4, imagined_episode_steps=20),
)


def test_kill_9_mid_experiment_then_resume(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    svc = ServiceProcess(
        "rlsim", {"STORE__KIND": "local", "STORE__ROOT": str(root)}, token=TOKEN, workdir=tmp_path / "svc"
    )
    with svc:
        headers = svc.headers
        r = httpx.post(f"{svc.url}/v1/experiments", json=REQ, headers=headers, timeout=60)
        assert r.status_code == 202, r.text
        eid = r.json()["experiment_id"]
        pointer = f"experiments/{eid}/checkpoints/latest.json"
        wait_for(lambda: store.exists(pointer), 180, "the first iteration's checkpoint", interval_s=0.02)
        svc.kill()  # SIGKILL: no shutdown, the record stays "running"
        done_at_kill = json.loads(store.get_bytes(pointer))["step"]
        record = json.loads(store.get_bytes(f"experiments/{eid}/record.json"))
        assert record["state"] == "running" and done_at_kill < 4
        state = json.loads(store.get_bytes(f"{json.loads(store.get_bytes(pointer))['prefix']}/state.json"))

        svc.start()  # the same service again: it resumes what was left running
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            rec = httpx.get(f"{svc.url}/v1/experiments/{eid}", headers=headers, timeout=30).json()
            if rec["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.3)
        assert rec["state"] == "succeeded", rec
        assert rec["resumed_from_step"] == [state["real_steps"]] and state["real_steps"] > 0
        assert rec["metrics"]["iterations"] == 4 and rec["metrics"]["real_steps"] == 240
        pol = httpx.get(f"{svc.url}/v1/policies", headers=headers, timeout=30).json()[0]
        # the episodes before the kill are the lineage's first ones, collected once
        before = [e["video_id"] for e in state["episodes"]]
        assert pol["lineage"]["video_ids"][: len(before)] == before
        assert len(set(pol["lineage"]["video_ids"])) == len(pol["lineage"]["video_ids"])
