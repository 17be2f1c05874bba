"""Simulated robot arms (MuJoCo Reacher-v5, Pusher-v5) through the simulator source's HTTP job, end to end.

Checks the job ingests 64x64 episodes, rendered headless (MUJOCO_GL=egl), with the right action widths
(Pusher 7 torques, Reacher 2) stored beside them. The controllers themselves are tested with
worldloom.sim (libs/sim/tests/test_mujoco_arms.py).
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest
from safetensors.numpy import load

AUTH = {"Authorization": "Bearer test-token"}
SIZE = {"width": 64, "height": 64}


@pytest.fixture(scope="module")
def gl():
    """Skip (with the reason) only where no headless OpenGL can be made: then `make gl` is missing."""
    try:
        env = gym.make("Reacher-v5", render_mode="rgb_array", **SIZE)
        env.reset(seed=0)
        frame = env.render()
        env.close()
    except Exception as exc:  # noqa: BLE001 - any GL failure means: cannot test rendering here
        pytest.skip(
            f"no headless OpenGL for MuJoCo (MUJOCO_GL=egl needs Debian libegl1 libegl-mesa0 "
            f"libopengl0 libgl1-mesa-dri; `make gl`): {exc.__class__.__name__}: {exc}"
        )
    assert frame.shape == (64, 64, 3) and frame.std() > 0  # a real render, not a blank buffer


def _wait(client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/sources/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.mark.parametrize(
    ("env_id", "width", "policy"),
    [("Pusher-v5", 7, "scripted"), ("Reacher-v5", 2, "random"), ("Reacher-v5", 2, "scripted:0.2")],
)
def test_arm_episode_ingested_with_actions_over_http(gl, embedded, env_id, width, policy):
    client, _, store = embedded
    body = {"env": env_id, "episodes": 1, "policy": policy, "seed": 5, "max_steps": 6, "env_kwargs": SIZE}
    r = client.post("/v1/sources/gymnasium", json=body, headers=AUTH)
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["job_id"])
    assert job["state"] == "succeeded", job["errors"]
    rec = client.get(f"/v1/videos/{job['video_ids'][0]}", headers=AUTH).json()
    attrs = rec["attributes"]
    assert attrs["env"] == env_id and attrs["policy"] == policy and attrs["steps"] == "6"
    assert (rec["info"]["width"], rec["info"]["height"], rec["info"]["frame_count"]) == (64, 64, 7)
    arrays = load(store.get_bytes(store.key_from_uri(attrs["actions_uri"])))
    assert arrays["actions"].shape == (6, width) and arrays["actions"].dtype == np.float32
    assert np.abs(arrays["actions"]).max() <= (2.0 if env_id == "Pusher-v5" else 1.0)
    assert arrays["rewards"].shape == (6,) and np.all(arrays["rewards"] < 0)  # both envs: minus a distance
