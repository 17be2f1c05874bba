"""The simulator source's HTTP job API (/v1/sources/gymnasium, /v1/sources/jobs/{id}) and its refusals.

The recorder itself (alignment, determinism, limits) is tested with worldloom.sim (libs/sim/tests).
"""

from __future__ import annotations

import time

import pytest

from worldloom.core import events
from worldloom.sim.settings import GymnasiumLimits
from worldloom.testkit.uploads import published

AUTH = {"Authorization": "Bearer test-token"}


def _events(bus):
    return [e.video_ingested for e in published(bus, events.TOPIC_VIDEOS_INGESTED)]


def _wait(client, job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/sources/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_api_job_runs_to_completion_and_is_idempotent(embedded):
    client, bus, store = embedded
    body = {"env": "CartPole-v1", "episodes": 2, "policy": "random", "seed": 3, "max_steps": 40, "env_kwargs": {}}
    r = client.post("/v1/sources/gymnasium", json=body, headers=AUTH)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/sources/jobs/{r.json()['job_id']}"
    job = _wait(client, r.json()["job_id"])
    assert job["state"] == "succeeded" and job["percent"] == 100 and job["errors"] == []
    assert job["episodes_done"] == 2 and len(set(job["video_ids"])) == 2
    assert store.exists(f"jobs/{job['job_id']}.json")
    for vid in job["video_ids"]:
        rec = client.get(f"/v1/videos/{vid}", headers=AUTH).json()
        assert rec["status"] == "ingested" and rec["attributes"]["env"] == "CartPole-v1"
        assert store.exists(store.key_from_uri(rec["attributes"]["actions_uri"]))
    again = _wait(client, client.post("/v1/sources/gymnasium", json=body, headers=AUTH).json()["job_id"])
    assert again["video_ids"] == job["video_ids"] and all(e["duplicate"] for e in again["episodes"])
    assert len(_events(bus)) == 2


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"env": "NoSuchEnv-v9"}, 422, "unknown_env"),
    ({"env": "CartPole-v1", "episodes": 65}, 422, "too_many_episodes"),
    ({"env": "CartPole-v1", "max_steps": 10_001}, 422, "too_many_steps"),
    ({"env": "CartPole-v1", "episode": 2}, 422, "invalid_request"),  # unknown field
    ({"env": "CartPole-v1", "policy": "ppo"}, 422, "unknown_policy"),
    ({"env": "CartPole-v1", "env_kwargs": {"render_mode": "human"}}, 422, "invalid_env_kwargs"),
    ({"env": "../../etc/passwd"}, 422, "unknown_env"),
    ({"env": "CartPole-v1\n"}, 422, "invalid_request"),
])
def test_api_refusals(embedded, body, status, code):
    client, bus, store = embedded
    r = client.post("/v1/sources/gymnasium", json=body, headers=AUTH)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert list(store.list("jobs/")) == []


def test_api_auth_missing_job_and_env_list(embedded):
    client, _, _ = embedded
    assert client.post("/v1/sources/gymnasium", json={"env": "CartPole-v1"}).status_code == 401
    assert client.get("/v1/sources/jobs/" + "0" * 32, headers=AUTH).status_code == 404
    assert client.get("/v1/sources/jobs/..%2Fx", headers=AUTH).status_code == 404
    envs = client.get("/v1/sources/gymnasium/envs", headers=AUTH).json()
    by_id = {e["id"]: e for e in envs["envs"]}
    assert by_id["CartPole-v1"]["available"] and "random" in envs["policies"]
    assert envs["limits"]["max_episodes"] == 64


def test_shutdown_fails_running_and_queued_jobs_and_pending_is_bounded(embedded):
    client, _, _ = embedded
    runner = client.app.state.sources
    long = client.post("/v1/sources/gymnasium", json={"env": "Pendulum-v1", "max_steps": 10_000}, headers=AUTH).json()
    queued = client.post("/v1/sources/gymnasium", json={"env": "CartPole-v1"}, headers=AUTH).json()
    runner.limits = GymnasiumLimits(max_pending_jobs=2)
    r = client.post("/v1/sources/gymnasium", json={"env": "CartPole-v1"}, headers=AUTH)
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_jobs"
    runner.shutdown()
    for job_id in (long["job_id"], queued["job_id"]):
        job = client.get(f"/v1/sources/jobs/{job_id}", headers=AUTH).json()
        assert job["state"] == "failed" and job["errors"][-1]["code"] == "shutting_down", job
    r = client.post("/v1/sources/gymnasium", json={"env": "CartPole-v1"}, headers=AUTH)
    assert r.status_code == 503
