"""RL-sim API on the embedded stack: a local store, the in-process bus, CartPole-v1 at 32x32 and tiny models
(one-layer world model, tiny tokenizer trained by the experiment, few steps everywhere: seconds per experiment)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from fastapi.testclient import TestClient

from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import VideoRecord, raw_meta_key, tokenizer_model_key, world_model_key
from worldloom.core.episodes import read_episode_arrays
from worldloom.core.jobs import read_progress
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.models.tokenizer import save_checkpoint as save_tokenizer
from worldloom.models.world import ActionSpec
from worldloom.models.world.factory import save_world_checkpoint
from worldloom.models.world.registry import WorldModelLineage, WorldModelRecord, WorldModelRegistry
from worldloom.rlsim import loop
from worldloom.rlsim.app import build_app
from worldloom.rlsim.settings import DEFAULT_ENVS, RlsimSettings
from worldloom.testkit.imagination import imagination_model

TINY_WM = dict(
    family="ar",
    size="tiny",
    config=dict(n_layer=1, d_model=32, n_head=2),
    tokenizer=dict(size="tiny", channels=16, steps=2, batch=2),
    window=4,
    context_frames=3,
    updates=3,
    batch=2,
)
TINY_AGENT = dict(hidden=32, layers=1, updates=3, imagined_envs=4, horizon=4, imagined_episode_steps=20)
REQ: dict[str, Any] = dict(
    env_id="CartPole-v1",
    resolution=32,
    steps=120,
    warmup_steps=60,
    steps_per_iteration=60,
    max_episode_steps=50,
    eval_episodes=1,
    seed=3,
    world_model=TINY_WM,
    agent=TINY_AGENT,
)


class NoPixels(gym.Env):
    """Renders only for people: no rgb_array."""

    metadata = {"render_modes": ["human"]}
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)


class MultiAction(gym.Env):
    """Renders pixels, but its actions are MultiDiscrete: nothing the agent can output."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode


gym.register("RlsimTestNoPixels-v0", entry_point=NoPixels)
gym.register("RlsimTestMultiAction-v0", entry_point=MultiAction)
TEST_ENVS = [*DEFAULT_ENVS, "RlsimTestNoPixels-v0", "RlsimTestMultiAction-v0", "RlsimTestGhost-v0"]


def _settings(root: Path, **rl: Any) -> RlsimSettings:
    return RlsimSettings(
        http=HttpSettings(auth_required=False),
        store=StoreSettings(root=root),
        rl={"allowed_envs": TEST_ENVS, "max_real_steps": 5000, **rl},
    )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[TestClient, LocalStore, InProcessBus]]:
    store = LocalStore(tmp_path / "store")
    bus = InProcessBus(retry_backoff_s=0.01)
    with TestClient(build_app(_settings(tmp_path / "store"), store=store, bus=bus)) as client:
        yield client, store, bus


def _wait(
    client: TestClient, eid: str, states: tuple[str, ...] = ("succeeded", "failed", "cancelled"), timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    rec: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rec = client.get(f"/v1/experiments/{eid}").json()
        if rec["state"] in states:
            return rec
        time.sleep(0.2)
    raise AssertionError(f"experiment {eid} stuck: {rec}")


def _registered_model(store: LocalStore, tmp: Path, model_id: str, actions: int) -> None:
    """A finished action-conditioned AR model with reward heads on 32x32 frames, and its tokenizer."""
    model, tok = imagination_model("ar", ActionSpec.discrete(actions), size=32)
    tid = f"tok-{model_id}"
    path = save_tokenizer(tmp / tid / "tokenizer.safetensors", tok)
    for f in (path, path.with_suffix(".json")):
        store.put_bytes(f"{tokenizer_model_key(tid).rsplit('/', 1)[0]}/{f.name}", f.read_bytes())
    path = save_world_checkpoint(tmp / model_id / "world_model.safetensors", model)
    for f in (path, path.with_suffix(".json")):
        store.put_bytes(f"{world_model_key(model_id).rsplit('/', 1)[0]}/{f.name}", f.read_bytes())
    WorldModelRegistry(store).save(
        WorldModelRecord(
            model_id=model_id,
            name="pre",
            family="ar",
            state="succeeded",
            config=model.config.to_dict(),
            lineage=WorldModelLineage(tokenizer_id=tid),
        )
    )


def test_experiment_runs_ingests_registers_and_evaluates(env) -> None:
    client, store, bus = env
    seen: list[events.Envelope] = []
    watcher = bus.consumer([events.TOPIC_POLICIES_TRAINED], "t", seen.append)
    r = client.post("/v1/experiments", json=REQ)
    assert r.status_code == 202, r.text
    eid = r.json()["experiment_id"]
    rec = _wait(client, eid)
    assert rec["state"] == "succeeded", rec
    assert rec["step"] == rec["real_steps"] == rec["total_steps"] == 120 and rec["percent"] == 100.0
    assert rec["metrics"]["real_steps"] == 120 and rec["metrics"]["iterations"] == 2
    for curve in (
        "real_return",
        "imagined_return",
        "world_model_loss",
        "reward_loss",
        "imagined_steps_per_s",
        "episode_return",
        "tokenizer_loss",
    ):
        assert rec["curves"][curve], curve
    assert [s for s, _ in rec["curves"]["real_return"]] == [60, 120]  # one evaluation per iteration

    # the policy: registered with lineage, announced once
    policies = client.get("/v1/policies").json()
    assert len(policies) == 1
    pol = client.get(f"/v1/policies/{policies[0]['policy_id']}").json()
    lin = pol["lineage"]
    assert lin["experiment_id"] == eid and lin["env_id"] == "CartPole-v1" and lin["real_steps"] == 120
    assert store.exists(store.key_from_uri(lin["world_model_uri"])) and store.exists(
        store.key_from_uri(pol["policy_uri"])
    )
    assert pol["action_kind"] == "discrete" and pol["action_repeat"] == 4 and pol["resolution"] == 32
    watcher.drain(idle_polls=2, timeout_s=0.2)
    assert len(seen) == 1
    payload = events.payload_of(seen[0])
    assert payload.policy_id == pol["policy_id"] and payload.experiment_id == eid and payload.real_steps == 120
    assert list(payload.video_ids) == lin["video_ids"]
    assert seen[0].event_id == events.effect_id(events.TOPIC_POLICIES_TRAINED, pol["policy_id"])

    # every training episode is an ingested video with its actions and rewards, announced like any other
    ingested = [events.payload_of(events.decode(m.value)).video_id for m in bus.messages(events.TOPIC_VIDEOS_INGESTED)]
    assert sorted(ingested) == sorted(lin["video_ids"])
    steps = 0
    for vid in lin["video_ids"]:
        video = store.get_record(raw_meta_key(vid), VideoRecord)
        assert video.status == "ingested" and video.source == "gymnasium"
        assert video.attributes["experiment"] == eid and video.attributes["env"] == "CartPole-v1"
        assert (video.info["width"], video.info["height"]) == (32, 32)
        arrays = read_episode_arrays(store, vid)
        assert arrays is not None and {"actions", "rewards", "terminated", "truncated"} <= set(arrays)
        assert "observations" not in arrays  # pixels only: the simulator's state is not recorded
        assert video.info["frame_count"] == len(arrays["actions"]) + 1
        steps += len(arrays["actions"])
    assert steps == 120
    lo, hi = lin["training_seeds"]
    assert hi - lo == len(lin["video_ids"])

    # evaluate: fresh seeds past the training ones, returns and a video
    r = client.post(f"/v1/policies/{pol['policy_id']}/evaluate", json={"episodes": 2})
    assert r.status_code == 200, r.text
    ev = r.json()
    assert len(ev["returns"]) == 2 and all(s >= hi for s in ev["seeds"]) and ev["lengths"][0] == ev["returns"][0]
    assert ev["mean_return"] == pytest.approx(np.mean(ev["returns"]))
    video = client.get(ev["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"
    assert store.get_bytes(ev["video_key"]) == video.content
    r = client.post(f"/v1/policies/{pol['policy_id']}/evaluate", json={"episodes": 2, "seed": lo})
    assert r.status_code == 422 and r.json()["error"]["code"] == "seed_used_in_training"
    r = client.post(f"/v1/policies/{pol['policy_id']}/evaluate", json={"episodes": 51})
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_episodes"
    assert client.post("/v1/policies/pol-000000000000/evaluate", json={}).status_code == 404


def test_cancel(env) -> None:
    client, _, _ = env
    r = client.post("/v1/experiments", json={**REQ, "steps": 4000, "steps_per_iteration": 1000})
    eid = r.json()["experiment_id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/experiments/{eid}").json()["step"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.delete(f"/v1/experiments/{eid}").status_code == 200
    rec = _wait(client, eid)
    assert rec["state"] == "cancelled" and rec["step"] < 4000
    assert client.get("/v1/policies").json() == []
    assert client.delete(f"/v1/experiments/{eid}").json()["error"]["code"] == "job_finished"


class Killed(BaseException):
    """Stands in for kill -9: escapes every ``except Exception`` and leaves the record as it was (running)."""


def test_resume_after_a_kill_continues_from_the_last_iteration(tmp_path: Path, monkeypatch) -> None:
    store = LocalStore(tmp_path / "store")
    bus = InProcessBus(retry_backoff_s=0.01)
    real_checkpoint = loop.Experiment.checkpoint

    def checkpoint_then_die(self: loop.Experiment) -> None:
        real_checkpoint(self)
        if self.iteration == 1:
            raise Killed()

    monkeypatch.setattr(loop.Experiment, "checkpoint", checkpoint_then_die)
    req = {**REQ, "steps": 180}  # three iterations: warm-up + two with the agent
    with TestClient(build_app(_settings(tmp_path / "store"), store=store, bus=bus)) as client:
        eid = client.post("/v1/experiments", json=req).json()["experiment_id"]
        deadline = time.monotonic() + 120
        while client.app.state.rlsim.jobs.is_running(eid) and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.1)
        killed = client.get(f"/v1/experiments/{eid}").json()
    assert killed["state"] == "running" and killed["step"] == 60  # left as a kill leaves it
    first_videos = len(bus.messages(events.TOPIC_VIDEOS_INGESTED))

    monkeypatch.setattr(loop.Experiment, "checkpoint", real_checkpoint)
    with TestClient(build_app(_settings(tmp_path / "store"), store=store, bus=bus)) as client:  # a restart
        rec = _wait(client, eid)
        assert rec["state"] == "succeeded", rec
        assert rec["resumed_from_step"] == [60]
        assert rec["metrics"]["iterations"] == 3 and rec["metrics"]["real_steps"] == 180
        assert [s for s, _ in rec["curves"]["real_return"]] == [60, 120, 180]
        pol = client.get("/v1/policies").json()[0]
    progress = read_progress(store, f"experiments/{eid}")
    assert progress is not None and progress.notes["iteration"] == 3
    # the warm-up episodes were not collected again: iteration 0's videos are part of the lineage once
    warmup = [m for m in bus.messages(events.TOPIC_VIDEOS_INGESTED)][:first_videos]
    ids = [events.payload_of(events.decode(m.value)).video_id for m in warmup]
    assert pol["lineage"]["video_ids"][:first_videos] == ids
    assert len(pol["lineage"]["video_ids"]) == len(set(pol["lineage"]["video_ids"]))


def test_a_registered_world_model_to_start_from(env, tmp_path: Path) -> None:
    client, store, _ = env
    _registered_model(store, tmp_path, "wm-cart", actions=2)
    wm = dict(model_id="wm-cart", window=4, context_frames=3, updates=2, batch=2)
    r = client.post("/v1/experiments", json={**REQ, "steps": 60, "world_model": wm})
    assert r.status_code == 202, r.text
    rec = _wait(client, r.json()["experiment_id"])
    assert rec["state"] == "succeeded", rec
    assert rec["lineage"]["base_world_model"] == "wm-cart" and rec["lineage"]["tokenizer_id"] == "tok-wm-cart"
    pol = client.get("/v1/policies").json()[0]
    assert pol["lineage"]["base_world_model"] == "wm-cart"
    assert "tokenizer_loss" not in rec["curves"]  # a registered tokenizer is not retrained


def _refused(client: TestClient, body: dict[str, Any], status: int, code: str) -> None:
    r = client.post("/v1/experiments", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.json()


def test_refusals_before_anything_runs(env, tmp_path: Path) -> None:
    client, store, bus = env
    _refused(client, {**REQ, "env_id": "NoSuchEnv-v0"}, 422, "env_not_allowed")
    _refused(client, {**REQ, "env_id": "Taxi-v3"}, 422, "env_not_allowed")  # registered, not allow-listed
    _refused(client, {**REQ, "env_id": "RlsimTestGhost-v0"}, 422, "unknown_env")
    _refused(client, {**REQ, "env_id": "RlsimTestNoPixels-v0"}, 422, "env_cannot_render")
    _refused(client, {**REQ, "env_id": "RlsimTestMultiAction-v0"}, 422, "unsupported_action_space")
    _registered_model(store, tmp_path, "wm-three", actions=3)
    wm = dict(model_id="wm-three", window=4, context_frames=3)
    _refused(client, {**REQ, "world_model": wm}, 422, "action_space_mismatch")
    _refused(client, {**REQ, "world_model": {**wm, "model_id": "wm-nope"}}, 404, "model_not_found")
    _refused(client, {**REQ, "steps": 5001}, 422, "budget_too_large")
    _refused(client, {**REQ, "resolution": 36}, 422, "bad_resolution")  # not a multiple of 8
    _refused(client, {**REQ, "steps": 5000, "steps_per_iteration": 10}, 422, "too_many_iterations")
    _refused(client, {**REQ, "world_model": {**TINY_WM, "config": {"no_such_field": 1}}}, 422, "bad_config")
    _refused(client, {**REQ, "surprise": 1}, 422, "invalid_request")  # unknown fields, at any depth
    _refused(client, {**REQ, "agent": {**TINY_AGENT, "lr": 0.1}}, 422, "invalid_request")
    _refused(client, {**REQ, "world_model": {**TINY_WM, "tokenizer_id": "tok-x"}}, 422, "invalid_request")
    assert client.get("/v1/experiments").json() == []  # nothing was planned, let alone run
    assert not bus.messages(events.TOPIC_VIDEOS_INGESTED)


def test_settings_refuse_a_launcher_rlsim_would_ignore(tmp_path: Path) -> None:
    from pydantic import ValidationError

    for training in ({"launcher": "rayjob"}, {"ray_address": "ray://head:10001"}):
        with pytest.raises(ValidationError, match="own process"):
            RlsimSettings(store=StoreSettings(root=tmp_path), training=training)


def test_continuous_actions_pendulum_with_a_diffusion_model(env) -> None:
    client, store, _ = env
    wm = {**TINY_WM, "family": "diffusion", "sampling_steps": 2}
    req = {
        **REQ,
        "env_id": "Pendulum-v1",
        "steps": 80,
        "warmup_steps": 40,
        "steps_per_iteration": 40,
        "max_episode_steps": 40,
        "world_model": wm,
    }
    r = client.post("/v1/experiments", json=req)
    assert r.status_code == 202, r.text
    rec = _wait(client, r.json()["experiment_id"])
    assert rec["state"] == "succeeded", rec
    pol = client.get("/v1/policies").json()[0]
    assert pol["action_kind"] == "continuous" and pol["agent_config"]["action_low"] == -2.0
    assert pol["world_model"]["family"] == "diffusion"
    arrays = read_episode_arrays(store, pol["lineage"]["video_ids"][-1])
    assert arrays is not None and arrays["actions"].shape[1:] == (1,) and arrays["actions"].dtype == np.float32
    assert np.abs(arrays["actions"]).max() <= 2.0
    ev = client.post(f"/v1/policies/{pol['policy_id']}/evaluate", json={"episodes": 1, "video": False}).json()
    assert len(ev["returns"]) == 1 and ev["returns"][0] < 0 and ev["video_key"] is None
