"""The recorder (worldloom.sim): Gymnasium episodes recorded headlessly as MP4 + safetensors actions, then ingested.

Checks the frame alignment contract (T steps -> T+1 frames; frame i precedes action i) by replaying
the recorded actions, byte-identical re-recording (same video id, one event), request refusals,
continuous actions (Pendulum), and whichever optional env families are installed. The HTTP job API
over it is tested with the ingest service (services/ingest/tests/test_gymnasium_source.py).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import av
import gymnasium as gym
import numpy as np
import pytest
from safetensors.numpy import load, load_file

from worldloom.core import events
from worldloom.sim import GymnasiumLimits, record_episodes
from worldloom.sim.envs import check_env_kwargs
from worldloom.sim.ingest import actions_key, ingest_recording
from worldloom.testkit.uploads import published
from worldloom.video.ingest import IngestError
from worldloom.video.mp4_writer import Mp4Writer, rgb_to_yuv420p
from worldloom.video.probe import probe


def _events(bus):
    return [e.video_ingested for e in published(bus, events.TOPIC_VIDEOS_INGESTED)]


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory):
    return record_episodes("CartPole-v1", 2, "random", 0, 500, tmp_path_factory.mktemp("cartpole"))


# --- recording ----------------------------------------------------------------------------------
def test_cartpole_video_and_arrays_follow_the_documented_alignment(cartpole):
    assert [r.episode for r in cartpole] == [0, 1] and [r.seed for r in cartpole] == [0, 1]
    for rec in cartpole:
        info = probe(rec.video_path)
        assert info.codec == "h264" and info.fps == pytest.approx(50.0)
        assert info.frame_count == rec.steps + 1 == rec.frames
        assert (info.width, info.height) == (600, 400)
        arrays = load_file(str(rec.arrays_path))
        t = rec.steps
        assert arrays["actions"].shape == (t,) and arrays["actions"].dtype == np.int64
        assert arrays["rewards"].shape == (t,) and arrays["rewards"].dtype == np.float32
        assert arrays["terminated"].dtype == np.bool_ and arrays["truncated"].shape == (t,)
        assert arrays["observations"].shape == (t + 1, 4) and arrays["observations"].dtype == np.float32
        assert rec.ended_by == "terminated" and arrays["terminated"][-1] and not arrays["terminated"][:-1].any()
        desc = json.loads(rec.description_path.read_text())
        assert desc["action_space"] == {"type": "Discrete", "repr": "Discrete(2)", "n": 2, "start": 0,
                                        "dtype": "int64", "shape": []}
        assert desc["frames"] == t + 1 and desc["arrays"]["actions"] == {"shape": [t], "dtype": "int64"}


def test_replaying_the_actions_reproduces_observations_and_frames(cartpole):
    """frame[i] / observations[i] are the state before actions[i]; a one-frame shift would match worse."""
    rec = cartpole[0]
    arrays = load_file(str(rec.arrays_path))
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    obs, _ = env.reset(seed=rec.seed)
    observations, rendered = [obs], [env.render()]
    for action in arrays["actions"]:
        obs, *_ = env.step(int(action))
        observations.append(obs)
        rendered.append(env.render())
    env.close()
    np.testing.assert_array_equal(np.asarray(observations), arrays["observations"])
    decoded = _decode(rec.video_path)
    assert len(decoded) == len(rendered)
    aligned = [np.abs(d - r.astype(np.int16)).mean() for d, r in zip(decoded, rendered, strict=True)]
    shifted = [np.abs(d - r.astype(np.int16)).mean() for d, r in zip(decoded, rendered[1:], strict=False)]
    assert max(aligned) < 1.0 and sum(aligned[:-1]) < sum(shifted)


def test_same_seed_records_identical_bytes(cartpole, tmp_path):
    again = record_episodes("CartPole-v1", 1, "random", 1, 500, tmp_path)[0]  # = episode 1 of seed 0
    first = cartpole[1]
    assert again.seed == first.seed and again.steps == first.steps
    assert again.video_path.read_bytes() == first.video_path.read_bytes()
    assert again.arrays_path.read_bytes() == first.arrays_path.read_bytes()
    assert again.description == {**first.description, "episode": 0}


def test_pendulum_continuous_actions_and_max_steps_truncation(tmp_path):
    rec = record_episodes("Pendulum-v1", 1, "random", 7, 20, tmp_path)[0]
    arrays = load_file(str(rec.arrays_path))
    assert arrays["actions"].shape == (20, 1) and arrays["actions"].dtype == np.float32
    assert np.all(np.abs(arrays["actions"]) <= 2.0)
    assert rec.ended_by == "max_steps" and arrays["truncated"][-1] and not arrays["truncated"][:-1].any()
    info = probe(rec.video_path)
    assert info.frame_count == 21 and info.fps == pytest.approx(30.0)
    desc = rec.description
    assert desc["action_space"]["type"] == "Box" and desc["action_space"]["low"] == -2.0
    const = record_episodes("Pendulum-v1", 1, "constant:[0.5]", 7, 5, tmp_path / "c")[0]
    np.testing.assert_array_equal(load_file(str(const.arrays_path))["actions"], np.full((5, 1), 0.5, np.float32))


def test_encoder_pads_odd_sizes_and_converts_bt601(tmp_path):
    white, black = np.full((4, 4, 3), 255, np.uint8), np.zeros((4, 4, 3), np.uint8)
    assert set(rgb_to_yuv420p(white)[:4].ravel()) == {235} and set(rgb_to_yuv420p(white)[4:].ravel()) == {128}
    assert set(rgb_to_yuv420p(black)[:4].ravel()) == {16}
    frames = [np.random.default_rng(i).integers(0, 256, (211, 161, 3), dtype=np.uint8) for i in range(3)]
    digests = []
    for run in range(2):
        with Mp4Writer(tmp_path / f"{run}.mp4", 25) as w:
            for f in frames:
                w.write(f)
        digests.append((tmp_path / f"{run}.mp4").read_bytes())
    info = probe(tmp_path / "0.mp4")
    assert (info.width, info.height, info.frame_count) == (162, 212, 3) and digests[0] == digests[1]


@pytest.mark.parametrize("env_id", ["MountainCar-v0", "Acrobot-v1", "MountainCarContinuous-v0"])
def test_other_classic_control_envs(env_id, tmp_path):
    rec = record_episodes(env_id, 1, "random", 0, 5, tmp_path)[0]
    assert probe(rec.video_path).frame_count == 6 and rec.steps == 5


_OPTIONAL = [("LunarLander-v3", "Box2D"), ("ALE/Pong-v5", "ale_py"), ("Hopper-v5", "mujoco"), ("highway-v0", "highway_env")]


@pytest.mark.parametrize(("env_id", "module"), _OPTIONAL)
def test_optional_families_record_when_installed(env_id, module, tmp_path):
    if importlib.util.find_spec(module) is None:
        with pytest.raises(IngestError) as err:
            record_episodes(env_id, 1, "random", 0, 3, tmp_path)
        assert err.value.status == 501 and "worldloom-ingest[" in err.value.message
        return
    rec = record_episodes(env_id, 1, "random", 0, 3, tmp_path)[0]
    assert probe(rec.video_path).frame_count == rec.steps + 1
    assert load_file(str(rec.arrays_path))["actions"].shape[0] == rec.steps


def test_request_checks_and_limits(tmp_path):
    def code(**kw) -> str:
        args = {"env_id": "CartPole-v1", "episodes": 1, "policy": "random", "seed": 0, "max_steps": 10,
                "out_dir": tmp_path, **kw}
        with pytest.raises(IngestError) as err:
            record_episodes(**args, limits=GymnasiumLimits(max_episodes=3, max_steps=100, max_width=320))
        return err.value.code

    assert code(env_id="CartPol-v1") == "unknown_env"
    assert code(env_id="GymV26Environment-v0") == "unknown_env"  # registered, but not an allowed family
    assert code(episodes=4) == "too_many_episodes"
    assert code(max_steps=101) == "too_many_steps"
    assert code(seed=-1) == "invalid_seed"
    assert code(policy="greedy") == "unknown_policy"
    assert code(policy="constant") == "invalid_policy"
    assert code(policy="constant:[0.5]") == "invalid_policy"  # not an action of Discrete(2)
    assert code() == "resolution_too_large"  # 600x400 > 320
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize("kwargs", [{"render_mode": "human"}, {"xml_file": "/etc/passwd"}, {"modelPath": "x"},
                                    {"config": {"other_vehicles_type": "os.system"}}, {"x": "a/b"}])
def test_env_kwargs_refused(kwargs):
    with pytest.raises(IngestError) as err:
        check_env_kwargs(kwargs, 4096)
    assert err.value.code == "invalid_env_kwargs"


def test_env_kwargs_allowed():
    assert check_env_kwargs({"continuous": True, "gravity": -9.8, "config": {"lanes_count": 3}}, 4096)


# --- ingest -------------------------------------------------------------------------------------
def test_ingest_stores_actions_and_announces_once(ingest, cartpole):
    service, bus, store = ingest
    first = ingest_recording(service, cartpole[0])
    second = ingest_recording(service, cartpole[0])
    vid = first.video.video_id
    assert not first.duplicate and second.duplicate and second.video.video_id == vid
    attrs = first.video.attributes
    uri = store.uri(actions_key(vid))
    assert attrs["source"] == "gymnasium" and attrs["env"] == "CartPole-v1" and attrs["actions_uri"] == uri
    assert attrs["episode"] == "0" and attrs["seed"] == "0" and attrs["policy"] == "random"
    arrays = load(store.get_bytes(store.key_from_uri(uri)))
    assert arrays["actions"].shape == (cartpole[0].steps,)
    meta = json.loads(store.get_bytes(store.key_from_uri(attrs["actions_meta_uri"])))
    assert meta["env"] == "CartPole-v1" and meta["frames"] == first.video.info["frame_count"]
    evs = _events(bus)
    assert len(evs) == 1 and evs[0].video_id == vid
    assert evs[0].attributes["env"] == "CartPole-v1" and evs[0].attributes["actions_uri"] == uri
