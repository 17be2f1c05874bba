"""Tokenize API on the embedded stack (local store, in-process bus, training in-process)."""

from __future__ import annotations

import io
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import TRAIN_RENDITION, token_marker_key, token_shard_key
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.models.tokenizer import CausalVideoTokenizer, TokenizerConfig, save_checkpoint
from worldloom.testkit.clips import synthetic_clip
from worldloom.tokenize.app import build_app
from worldloom.tokenize.settings import TokenizeSettings
from worldloom.video.synthetic import write_video

TRAIN = dict(clips={"source": "synthetic"}, kind="discrete", compression="4x8x8", resolution=32, frames=5,
             steps=6, batch=2, num_images=1, checkpoint_every=3, log_every=2, val_fraction=0.34)


@pytest.fixture
def env(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    bus = InProcessBus(retry_backoff_s=0.01)
    for i in range(3):
        synthetic_clip(store, tmp_path, i)
    settings = TokenizeSettings(http=HttpSettings(auth_required=False), store=StoreSettings(root=tmp_path / "store"),
                                training={"in_process": True}, encode_max_frames=40)
    with TestClient(build_app(settings, store=store, bus=bus)) as client:
        yield client, store, bus, tmp_path


def _wait(client: TestClient, tid: str, states=("succeeded", "failed", "cancelled"), timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = client.get(f"/v1/tokenizers/{tid}").json()
        if rec["state"] in states:
            return rec
        time.sleep(0.2)
    raise AssertionError(f"tokenizer {tid} stuck: {rec}")


@pytest.fixture
def trained(env):
    client, store, bus, tmp = env
    r = client.post("/v1/tokenizers", json={**TRAIN, "name": "tiny-fsq"})
    assert r.status_code == 202, r.text
    rec = _wait(client, r.json()["tokenizer_id"])
    assert rec["state"] == "succeeded", rec
    return rec


def test_training_job_reports_progress_metrics_and_lineage(env, trained) -> None:
    client, store, *_ = env
    assert trained["percent"] == 100.0 and trained["step"] == 6
    assert [s for s, _ in trained["curves"]["loss"]] == [2, 4, 6]
    assert {"val_psnr", "val_ssim", "val_code_usage"} <= set(trained["metrics"])
    lineage = trained["lineage"]
    assert lineage["train_clips"] == 2 and lineage["val_clips"] == 1 and lineage["clip_filter"]["source"] == "synthetic"
    assert len(lineage["clip_ids_sha256"]) == 64
    assert trained["config"]["kind"] == "discrete" and trained["model_uri"].endswith("tokenizer.safetensors")
    listed = client.get("/v1/tokenizers").json()
    assert [r["tokenizer_id"] for r in listed] == [trained["tokenizer_id"]]


def test_activation_tokenizes_clips_once_with_shards_and_events(env, trained) -> None:
    client, store, bus, tmp = env
    tid = trained["tokenizer_id"]
    seen: list[events.Envelope] = []
    consumer = bus.consumer([events.TOPIC_CLIPS_TOKENIZED], "test", seen.append)
    assert client.post(f"/v1/tokenizers/{tid}/activate").json()["active"] is True
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(store.exists(token_marker_key(tid, f"clip{i}")) for i in range(3)):
        time.sleep(0.1)
    # a new clip arrives through the bus; then the same event is delivered again
    rec = synthetic_clip(store, tmp, 7)
    env_ = events.new_event("curate", events.ClipCurated(
        clip_id=rec.clip_id, video_id=rec.video_id, renditions={TRAIN_RENDITION: store.uri(rec.renditions[TRAIN_RENDITION])},
        width=48, height=48))
    for _ in range(2):
        bus.publish(events.TOPIC_CLIPS_CURATED, env_, rec.clip_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not store.exists(token_marker_key(tid, "clip7")):
        time.sleep(0.1)
    time.sleep(0.5)
    import threading

    stop = threading.Event()
    t = threading.Thread(target=consumer.run, args=(stop,))
    t.start()
    time.sleep(1.5)
    stop.set()
    t.join(5)
    tokenized = [e.clip_tokenized for e in seen]
    assert sorted(e.clip_id for e in tokenized) == ["clip0", "clip1", "clip2", "clip7"]  # each exactly once
    ev = next(e for e in tokenized if e.clip_id == "clip7")
    assert ev.kind == "discrete" and list(ev.shape) == [6, 4, 4] and ev.dtype == "int32" and ev.frames == 21
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(store.get_bytes(token_shard_key(tid, "clip7")))) as tar:
        names = tar.getnames()
        arr = np.load(io.BytesIO(tar.extractfile("clip7.tokens.npy").read()), allow_pickle=False)
    assert names == ["clip7.tokens.npy", "clip7.json"] and arr.shape == (6, 4, 4) and arr.dtype == np.int32


def test_encode_decode_round_trip_and_evaluate(env, trained) -> None:
    client, store, bus, tmp = env
    tid = trained["tokenizer_id"]
    video = write_video(tmp / "in.mp4", width=64, height=48, frames=9, seed=3)
    r = client.post("/v1/encode", data={"tokenizer_id": tid}, files={"file": ("in.mp4", video.read_bytes())})
    assert r.status_code == 200, r.text
    enc = r.json()
    assert enc["frames"] == 9 and enc["resolution"] == 32 and enc["tokens"]["shape"] == [3, 4, 4]
    r = client.post("/v1/decode", json={"tokenizer_id": tid, "tokens": enc["tokens"], "format": "json"})
    assert r.status_code == 200 and r.json()["shape"] == [9, 32, 32, 3]
    r = client.post("/v1/decode", json={"tokenizer_id": tid, "tokens": enc["tokens"]})
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4" and r.content[4:8] == b"ftyp"
    b64 = client.post("/v1/encode", data={"tokenizer_id": tid, "encoding": "b64"},
                      files={"file": ("in.mp4", video.read_bytes())}).json()["tokens"]
    r = client.post("/v1/decode", json={"tokenizer_id": tid, "tokens": b64, "format": "gif"})
    assert r.status_code == 200 and r.content[:6] == b"GIF89a"
    r = client.post("/v1/evaluate", data={"tokenizer_id": tid}, files={"file": ("in.mp4", video.read_bytes())})
    assert r.status_code == 200 and 5 < r.json()["psnr"] < 60 and r.json()["frames"] == 9


def test_bad_input_gets_clear_4xx(env, trained, tmp_path: Path) -> None:
    client, store, bus, tmp = env
    tid = trained["tokenizer_id"]

    def err(r, status: int, code: str) -> None:
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code, r.text

    tokens = {"shape": [2, 4, 4], "dtype": "int32", "data": np.zeros((2, 4, 4), int).tolist()}
    err(client.post("/v1/decode", json={"tokenizer_id": tid, "tokens": {**tokens, "shape": [3, 4, 4]},
                                        "format": "json"}), 422, "bad_array")
    err(client.post("/v1/decode", json={"tokenizer_id": tid, "tokens": {**tokens, "shape": [2, 16]}}), 422,
        "bad_shape")
    err(client.post("/v1/decode", json={"tokenizer_id": tid, "tokens": {"shape": [32], "dtype": "int32",
                                        "data": [0] * 32}}), 422, "bad_shape")
    bad = {**tokens, "data": np.full((2, 4, 4), 64000).tolist()}
    err(client.post("/v1/decode", json={"tokenizer_id": tid, "tokens": bad}), 422, "token_out_of_range")
    err(client.post("/v1/decode", json={"tokenizer_id": tid, "tokens": {"shape": [2000, 40, 40], "dtype": "int32",
                                        "b64": ""}}), 413, "too_many_tokens")
    err(client.post("/v1/decode", json={"tokenizer_id": tid, "tokens": tokens, "extra": 1}), 422, "invalid_request")
    err(client.post("/v1/decode", json={"tokenizer_id": "tok-nope", "tokens": tokens}), 404, "tokenizer_not_found")
    garbage = np.random.default_rng(0).bytes(5000)
    err(client.post("/v1/encode", data={"tokenizer_id": tid}, files={"file": ("x.mp4", garbage)}), 422, "not_a_video")
    long = write_video(tmp / "long.mp4", width=32, height=32, frames=60)
    err(client.post("/v1/encode", data={"tokenizer_id": tid}, files={"file": ("l.mp4", long.read_bytes())}),
        413, "clip_too_long")
    err(client.post("/v1/encode", data={"tokenizer_id": tid, "resolution": "30"},
                    files={"file": ("l.mp4", long.read_bytes())}), 422, "bad_resolution")
    err(client.post("/v1/tokenizers", json={**TRAIN, "dataset": {"name": "x"}}), 422, "invalid_request")
    err(client.post("/v1/tokenizers", json={**TRAIN, "clips": {"source": "nothing"}}), 422, "no_clips")
    err(client.post("/v1/tokenizers", json={**TRAIN, "frames": 6}), 422, "bad_config")
    err(client.post("/v1/tokenizers", json={**TRAIN, "workers": 99}), 422, "too_many_workers")
    err(client.post("/v1/tokenizers", json={**TRAIN, "dataset": {"name": "missing"}, "clips": None}), 404,
        "dataset_not_found")
    err(client.delete(f"/v1/tokenizers/{tid}"), 409, "job_finished")
    # a corrupted model file in the store: refused with a reason, the service stays up
    other = client.post("/v1/tokenizers", json={**TRAIN, "name": "second"}).json()["tokenizer_id"]
    assert _wait(client, other)["state"] == "succeeded"
    store.put_bytes(f"tokenizers/{other}/model/tokenizer.safetensors", b"\x80\x04garbage")
    err(client.post("/v1/decode", json={"tokenizer_id": other, "tokens": tokens}), 409, "checkpoint_corrupt")
    assert client.get("/healthz").status_code == 200


def test_import_accepts_safetensors_and_refuses_pickles(env, tmp_path: Path) -> None:
    client, *_ = env
    model = CausalVideoTokenizer(TokenizerConfig.preset("tiny", "continuous", "4x8x8").replace(channels=16))
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    r = client.post("/v1/tokenizers:import", data={"name": "mine"}, files={"file": ("m.safetensors", path.read_bytes())})
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["source"] == "imported" and rec["state"] == "succeeded" and rec["lineage"]["imported_from"] == "m.safetensors"
    enc = client.post("/v1/encode", data={"tokenizer_id": rec["tokenizer_id"], "resolution": "32"},
                      files={"file": ("v.mp4", write_video(tmp_path / "v.mp4", 32, 32, 5).read_bytes())}).json()
    assert enc["kind"] == "continuous" and enc["tokens"]["shape"] == [16, 2, 4, 4]

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:  # what a malicious checkpoint would do on unpickling
            return (Path("/tmp/pwned-by-worldloom").touch, ())

    for payload in (pickle.dumps({"weights": Evil()}), b"PK\x03\x04" + b"\0" * 100, b"short"):
        r = client.post("/v1/tokenizers:import", files={"file": ("evil.safetensors", payload)})
        assert r.status_code == 422 and r.json()["error"]["code"] == "bad_checkpoint", r.text
    assert not Path("/tmp/pwned-by-worldloom").exists()
    buf = tmp_path / "nometa.safetensors"
    save_file({"w": torch.zeros(2)}, str(buf))
    r = client.post("/v1/tokenizers:import", files={"file": ("n.safetensors", buf.read_bytes())})
    assert r.status_code == 422 and "config" in r.json()["error"]["message"]


def test_cancel_stops_a_running_job(env) -> None:
    client, *_ = env
    tid = client.post("/v1/tokenizers", json={**TRAIN, "steps": 5000}).json()["tokenizer_id"]
    _wait(client, tid, states=("running",))
    deadline = time.monotonic() + 60
    while client.get(f"/v1/tokenizers/{tid}").json()["step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.delete(f"/v1/tokenizers/{tid}").status_code == 200
    rec = _wait(client, tid)
    assert rec["state"] == "cancelled" and rec["step"] < 5000
