"""Uploads that carry an episode's per-step arrays beside the video (real ingest app, embedded store and bus).

Good arrays in every format end up where the simulator's are, readable by the training data reader; every
bad case is a 4xx with its code and leaves nothing in the store and nothing on the bus.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save as save_safetensors

from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import actions_key, actions_meta_key, raw_meta_key
from worldloom.core.settings import StoreSettings
from worldloom.ingest.app import build_app
from worldloom.models.world.data import load_episode_arrays
from worldloom.sim import record_episodes
from worldloom.sim.ingest import ingest_recording
from worldloom.testkit.uploads import published

AUTH = {"Authorization": "Bearer test-token"}
BRIDGE_EPISODE = "train/83"  # 30 frames, 29 actions of 7 values, state.npy 30 x 8


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


@pytest.fixture
def bridge(shared_data):
    split, stem = BRIDGE_EPISODE.split("/")
    ann = json.loads((shared_data / f"bridge/annotation/{split}/{stem}.json").read_text())
    video = shared_data / f"bridge/videos/{split}/{stem}/rgb.mp4"
    return video, np.asarray(ann["action"]), np.load(video.parent / "state.npy")


def _post(client, video: Path, files: dict | None = None, data: dict | None = None):
    parts = {"file": (video.name, video.read_bytes(), "video/mp4")}
    parts.update({k: (f"{k}.bin", v, "application/octet-stream") for k, v in (files or {}).items()})
    return client.post("/v1/videos", files=parts, data=data, headers=AUTH)


def _stored(store) -> list[str]:
    return sorted(o.key for o in store.list("raw/"))


def _events(bus):
    return published(bus, events.TOPIC_VIDEOS_INGESTED)


# --- good uploads -------------------------------------------------------------------------------
def test_npy_arrays_are_stored_like_a_simulator_episode(embedded, bridge):
    client, bus, store = embedded
    video, actions, states = bridge
    t = len(states)
    rewards = json.dumps([0.0] * (t - 2) + [1.0])  # a JSON text field, T - 1 rows
    terminated = json.dumps([0] * (t - 2) + [1])  # 0/1 numbers are flags
    r = _post(client, video, {"actions": _npy(actions), "states": _npy(states)},
              {"rewards": rewards, "terminated": terminated})
    assert r.status_code == 201, r.text
    rec = r.json()["video"]
    vid = rec["video_id"]
    assert rec["source"] == "upload" and rec["info"]["frame_count"] == t
    assert rec["attributes"]["actions_uri"] == store.uri(actions_key(vid))
    assert rec["attributes"]["actions_meta_uri"] == store.uri(actions_meta_key(vid))

    arrays = load_episode_arrays(store, vid)  # the reader training uses for simulator episodes
    assert arrays is not None and set(arrays) == {"actions", "states", "rewards", "terminated"}
    assert arrays["actions"].shape == (t - 1, 7) and arrays["actions"].dtype == np.float32
    np.testing.assert_allclose(arrays["actions"], actions, rtol=1e-6, atol=1e-7)
    assert arrays["states"].shape == (t, 8) and arrays["states"].dtype == np.float32
    assert arrays["rewards"].dtype == np.float32 and arrays["rewards"][-1] == 1.0
    assert arrays["terminated"].dtype == np.bool_ and arrays["terminated"].sum() == 1

    meta = json.loads(store.get_bytes(actions_meta_key(vid)))
    assert meta["format"] == "worldloom.upload/1" and meta["frames"] == t and meta["steps"] == t - 1
    assert meta["fps"] == pytest.approx(3.0)
    assert meta["action_space"] == {"type": "Box", "shape": [7], "dtype": "float32"}
    assert meta["arrays"]["states"] == {"shape": [t, 8], "dtype": "float32"}
    evs = _events(bus)
    assert len(evs) == 1 and evs[0].video_ingested.attributes["actions_uri"] == rec["attributes"]["actions_uri"]


def test_safetensors_and_json_arrays_parts_store_the_same_bytes_as_npy(embedded, bridge):
    client, bus, store = embedded
    video, actions, _ = bridge
    first = _post(client, video, {"arrays": save_safetensors({"actions": actions})})
    assert first.status_code == 201, first.text
    vid = first.json()["video"]["video_id"]
    stored = store.get_bytes(actions_key(vid))
    # the same episode in the other formats is the same episode: a duplicate, not a conflict
    for files, data in (({"actions": _npy(actions.astype(np.float32))}, None),
                        ({"arrays": json.dumps({"actions": actions.tolist()}).encode()}, None),
                        (None, {"actions": json.dumps(actions.tolist())})):
        again = _post(client, video, files, data)
        assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
    assert store.get_bytes(actions_key(vid)) == stored and len(_events(bus)) == 1
    # a plain re-upload of the video (no arrays) is a duplicate too and keeps them
    assert _post(client, video).status_code == 200 and store.get_bytes(actions_key(vid)) == stored


def test_integer_actions_are_discrete_ids(embedded, shared_data):
    client, _, store = embedded
    video = shared_data / "bridge/videos/val/27/rgb.mp4"  # 24 frames
    r = _post(client, video, None, {"actions": json.dumps([i % 3 for i in range(24)])})
    assert r.status_code == 201, r.text
    vid = r.json()["video"]["video_id"]
    assert load_episode_arrays(store, vid)["actions"].dtype == np.int64
    space = json.loads(store.get_bytes(actions_meta_key(vid)))["action_space"]
    assert space["type"] == "Discrete" and space["n"] == 3


def test_outputs_then_record_then_event(embedded, bridge, monkeypatch):
    client, bus, store = embedded
    video, actions, _ = bridge
    order: list[str] = []
    for method in ("put_file",):  # put_bytes and put_record write through it
        original = getattr(store, method)

        def spy(key, *a, _original=original, **kw):
            order.append(key.rsplit("/", 1)[-1])
            return _original(key, *a, **kw)
        monkeypatch.setattr(store, method, spy)
    publish = bus.publish

    def spy_publish(topic, *a, **kw):
        order.append(topic)
        return publish(topic, *a, **kw)
    monkeypatch.setattr(bus, "publish", spy_publish)
    assert _post(client, video, {"actions": _npy(actions)}).status_code == 201
    writes = [k for k in order if not k.endswith(".claim")]
    assert writes == ["actions.safetensors", "actions.json", "video.mp4", "meta.json",
                      events.TOPIC_VIDEOS_INGESTED, "meta.json"]


def test_simulator_and_upload_sidecars_share_fields_and_reader(embedded, bridge, tmp_path):
    client, _, store = embedded
    video, actions, _ = bridge
    up = _post(client, video, {"actions": _npy(actions)}).json()["video"]
    rec = record_episodes("CartPole-v1", 1, "random", 0, 20, tmp_path)[0]
    sim = ingest_recording(client.app.state.ingest, rec).video
    sidecars = [json.loads(store.get_bytes(actions_meta_key(vid))) for vid in (up["video_id"], sim.video_id)]
    common = {"format", "frames", "steps", "fps", "frame_alignment", "action_space", "arrays"}
    assert common <= set(sidecars[0]) and common <= set(sidecars[1])
    assert sidecars[1]["format"] == "worldloom.gymnasium/1" and sidecars[1]["action_space"]["type"] == "Discrete"
    sim_arrays = load_episode_arrays(store, sim.video_id)
    assert sim_arrays is not None and sim_arrays["actions"].shape == (rec.steps,)
    assert sim.attributes["actions_uri"] == store.uri(actions_key(sim.video_id))


# --- refusals -----------------------------------------------------------------------------------
def _bad_cases(actions: np.ndarray, states: np.ndarray) -> dict[str, tuple[dict, dict, int, str]]:
    """name -> (file parts, text fields, status, code)."""
    nan = actions.copy()
    nan[3, 2] = np.nan
    inf = states.copy()
    inf[0, 0] = np.inf
    t = len(states)
    return {
        "too_few_actions": ({"actions": _npy(actions[:-3])}, {}, 422, "array_length"),
        "too_many_actions": ({"actions": _npy(np.vstack([actions, actions[:2]]))}, {}, 422, "array_length"),
        "states_wrong_length": ({"actions": _npy(actions), "states": _npy(states[:5])}, {}, 422, "array_length"),
        "nan_action": ({"actions": _npy(nan)}, {}, 422, "array_not_finite"),
        "inf_state": ({"actions": _npy(actions), "states": _npy(inf)}, {}, 422, "array_not_finite"),
        "json_infinity": ({}, {"actions": "[[Infinity]]"}, 422, "array_not_finite"),
        "json_overflow": ({}, {"actions": json.dumps([[1e308]] * (t - 1)).replace("1e+308", "1e999")},
                          422, "array_not_finite"),
        "string_actions": ({}, {"actions": json.dumps([["up"]] * (t - 1))}, 422, "array_dtype"),
        "complex_actions": ({"actions": _npy(actions.astype(np.complex64))}, {}, 422, "array_dtype"),
        "bool_actions": ({"actions": _npy(np.ones((t - 1, 2), bool))}, {}, 422, "array_dtype"),
        "negative_ids": ({}, {"actions": json.dumps([-1] * (t - 1))}, 422, "array_dtype"),
        "terminated_not_a_flag": ({"actions": _npy(actions)}, {"terminated": json.dumps([2] * (t - 1))},
                                  422, "array_dtype"),
        "rewards_2d": ({"actions": _npy(actions), "rewards": _npy(np.zeros((t - 1, 2)))}, {}, 422, "array_shape"),
        "ragged_json": ({}, {"actions": json.dumps([[0.1, 0.2], [0.3]])}, 422, "array_shape"),
        "too_wide": ({"actions": _npy(np.zeros((t - 1, 65)))}, {}, 422, "array_too_wide"),
        "pickled_npy": ({"actions": _npy(np.array([{"a": 1}] * (t - 1), dtype=object), allow_pickle=True)}, {},
                        422, "pickled_array"),
        "raw_pickle": ({"actions": b"\x80\x04\x95" + b"\x00" * 40}, {}, 400, "invalid_array"),
        "truncated_npy": ({"actions": _npy(actions)[:-20]}, {}, 400, "invalid_array"),
        "garbage": ({"actions": b"not an array"}, {}, 400, "invalid_array"),
        "garbage_arrays": ({"arrays": b"\x05\x00\x00\x00\x00\x00\x00\x00hello"}, {}, 400, "invalid_array"),
        "bf16_safetensors": ({"arrays": _framed({"actions": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}},
                                                b"\x00\x00")}, {}, 422, "array_dtype"),
        "offsets_past_the_data": ({"arrays": _framed({"actions": {"dtype": "F32", "shape": [29, 7],
                                                                  "data_offsets": [0, 812]}}, b"\x00" * 16)},
                                  {}, 400, "invalid_array"),
        "malformed_entry": ({"arrays": _framed({"actions": {"dtype": "F32", "shape": 5, "data_offsets": [0, 4]}},
                                               b"\x00" * 4)}, {}, 400, "invalid_array"),
        "unknown_in_arrays": ({"arrays": save_safetensors({"actions": actions, "joints": states})}, {},
                              422, "unknown_array"),
        "unknown_json_name": ({"arrays": json.dumps({"actions": actions.tolist(), "gripper": [1]}).encode()}, {},
                              422, "unknown_array"),
        "unknown_part": ({"actions": _npy(actions), "joints": _npy(states)}, {}, 400, "unknown_field"),
        "no_actions": ({"states": _npy(states)}, {"rewards": json.dumps([0.0] * t)}, 422, "missing_actions"),
        "twice": ({"arrays": save_safetensors({"actions": actions}), "actions": _npy(actions)}, {},
                  400, "duplicate_array"),
        "npz": ({"actions": b"PK\x03\x04" + b"\x00" * 30}, {}, 400, "invalid_array"),
    }


def _framed(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


CASES = list(_bad_cases(np.zeros((29, 7)), np.zeros((30, 8))))


@pytest.mark.parametrize("case", CASES)
def test_bad_arrays_are_refused_and_nothing_is_stored(embedded, bridge, case):
    client, bus, store = embedded
    video, actions, states = bridge
    files, data, status, code = _bad_cases(actions, states)[case]
    r = _post(client, video, files, data)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert r.json()["error"]["message"]
    assert _stored(store) == [] and _events(bus) == []


def test_a_caller_cannot_point_attributes_at_arrays(embedded, bridge):
    client, bus, store = embedded
    video, _, _ = bridge
    r = _post(client, video, None, {"attributes": json.dumps({"actions_uri": "s3://elsewhere/x"})})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_attributes")
    assert _stored(store) == [] and _events(bus) == []


def test_other_arrays_for_a_stored_video_are_a_conflict(embedded, bridge):
    client, bus, store = embedded
    video, actions, _ = bridge
    plain = _post(client, video)
    assert plain.status_code == 201
    vid = plain.json()["video"]["video_id"]
    late = _post(client, video, {"actions": _npy(actions)})
    assert (late.status_code, late.json()["error"]["code"]) == (409, "episode_conflict"), late.text
    assert not store.exists(actions_key(vid))
    assert "actions_uri" not in json.loads(store.get_bytes(raw_meta_key(vid)))["attributes"]
    wrong_length = _post(client, video, {"actions": _npy(actions[:4])})
    assert wrong_length.json()["error"]["code"] == "array_length"  # the length is checked first
    assert len(_events(bus)) == 1


def test_changed_arrays_for_an_episode_are_a_conflict(embedded, bridge):
    client, bus, store = embedded
    video, actions, _ = bridge
    vid = _post(client, video, {"actions": _npy(actions)}).json()["video"]["video_id"]
    stored = store.get_bytes(actions_key(vid))
    r = _post(client, video, {"actions": _npy(actions * 2)})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "episode_conflict")
    assert store.get_bytes(actions_key(vid)) == stored and len(_events(bus)) == 1


def test_array_size_is_bounded_while_it_streams(tmp_path, ingest_settings, bridge):
    video, actions, _ = bridge
    settings = ingest_settings(store=StoreSettings(root=tmp_path / "store"),
                               episodes={"max_array_bytes": 4096, "max_json_bytes": 2048})
    bus = InProcessBus()
    with TestClient(build_app(settings, bus=bus), raise_server_exceptions=False) as client:
        store = client.app.state.ingest.store
        big = _post(client, video, {"actions": _npy(np.zeros((29, 60)))})  # 13,920 bytes > 4096
        assert (big.status_code, big.json()["error"]["code"]) == (413, "payload_too_large"), big.text
        together = _post(client, video, {"actions": _npy(actions), "states": _npy(np.zeros((30, 14)))})
        assert (together.status_code, together.json()["error"]["code"]) == (413, "arrays_too_large"), together.text
        json_big = _post(client, video, {"actions": json.dumps(actions[:, :4].tolist()).encode()})
        assert 2048 < len(json.dumps(actions[:, :4].tolist())) < 4096
        assert (json_big.status_code, json_big.json()["error"]["code"]) == (413, "arrays_too_large")
        assert _stored(store) == [] and _events(bus) == []


def test_one_part_per_array(embedded, bridge):
    client, bus, store = embedded
    video, actions, _ = bridge
    files = [("file", (video.name, video.read_bytes(), "video/mp4")),
             ("actions", ("a.npy", _npy(actions), "application/octet-stream")),
             ("actions", ("b.npy", _npy(actions), "application/octet-stream"))]
    r = client.post("/v1/videos", files=files, headers=AUTH)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_multipart"), r.text
    assert _stored(store) == [] and _events(bus) == []
