"""Train API on the embedded stack: tokenized clips in a local store, jobs trained in-process."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.numpy import save as save_safetensors

from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import TRAIN_RENDITION, ClipRecord, clip_meta_key
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.models.tokenizer import CausalVideoTokenizer, TokenizerConfig, save_checkpoint
from worldloom.models.tokenizer.data import moving_pattern_videos
from worldloom.models.tokenizer.shards import write_shard
from worldloom.train.app import build_app
from worldloom.train.settings import TrainSettings

JOB = dict(clips={"source": "sim"}, size="tiny", window=4, context_frames=1, eval_horizons=[1, 2], steps=6, batch=2,
           checkpoint_every=3, log_every=2, val_fraction=0.34, eval_steps=2)


def _tokenizer(store: LocalStore, tmp: Path, kind: str) -> tuple[str, CausalVideoTokenizer]:
    cfg = TokenizerConfig.preset("tiny", kind, "4x8x8").replace(channels=16)
    if kind == "discrete":
        cfg = cfg.replace(fsq_levels=(4, 4, 4))
    torch.manual_seed(0)
    model = CausalVideoTokenizer(cfg).eval()
    tid = f"tok-{kind}"
    path = save_checkpoint(tmp / tid / "tokenizer.safetensors", model)
    for f in (path, path.with_suffix(".json")):
        store.put_bytes(f"tokenizers/{tid}/model/{f.name}", f.read_bytes())
    return tid, model


@pytest.fixture
def env(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    bus = InProcessBus(retry_backoff_s=0.01)
    toks = {kind: _tokenizer(store, tmp_path, kind) for kind in ("discrete", "continuous")}
    videos = moving_pattern_videos(3, 21, 32, seed=1)  # 21 frames -> 6 latent frames at 4x
    for i in range(3):
        rec = ClipRecord(clip_id=f"c{i}", video_id=f"v{i}", source="sim", status="accepted", start_frame=0,
                         end_frame=21, start_s=0, end_s=1, duration_s=1, fps=21, width=32, height=32,
                         renditions={TRAIN_RENDITION: f"clips/c{i}/{TRAIN_RENDITION}"}, config_hash="h",
                         created_at=datetime.now(timezone.utc))
        store.put_bytes(clip_meta_key(rec.clip_id), rec.model_dump_json().encode())
        store.put_bytes(f"raw/v{i}/actions.safetensors",
                        save_safetensors({"actions": np.random.default_rng(i).integers(0, 2, 20)}))
        store.put_bytes(f"raw/v{i}/actions.json", json.dumps({"action_space": {"type": "Discrete", "n": 2}}).encode())
        with torch.no_grad():
            for kind, (tid, model) in toks.items():
                out = model.encode(videos[i : i + 1])
                array = out[1][0].numpy() if kind == "discrete" else out[0].numpy()
                meta = {"clip_id": rec.clip_id, "video_id": rec.video_id, "kind": kind, "compression": "4x8x8",
                        "frames": 21, "resolution": 32}
                store.put_bytes(f"tokens/{tid}/c{i}.tar", write_shard(rec.clip_id, kind, array, meta))
    settings = TrainSettings(http=HttpSettings(auth_required=False), store=StoreSettings(root=tmp_path / "store"),
                             training={"in_process": True})
    with TestClient(build_app(settings, store=store, bus=bus)) as client:
        yield client, store, bus


def _wait(client: TestClient, mid: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = client.get(f"/v1/jobs/{mid}").json()
        if rec["state"] in ("succeeded", "failed", "cancelled"):
            return rec
        time.sleep(0.2)
    raise AssertionError(f"job {mid} stuck: {rec}")


@pytest.mark.parametrize("family,tokenizer", [("ar", "tok-discrete"), ("diffusion", "tok-continuous")])
def test_job_trains_registers_and_announces_a_model(env, family: str, tokenizer: str) -> None:
    client, store, bus = env
    seen: list[events.Envelope] = []
    watcher = bus.consumer([events.TOPIC_MODELS_TRAINED], "t", seen.append)
    r = client.post("/v1/jobs", json={**JOB, "family": family, "tokenizer_id": tokenizer, "actions": True})
    assert r.status_code == 202, r.text
    mid = r.json()["model_id"]
    rec = _wait(client, mid)
    assert rec["state"] == "succeeded", rec
    assert rec["percent"] == 100.0 and [s for s, _ in rec["curves"]["loss"]] == [2, 4, 6]
    assert rec["throughput"] and all(v > 0 for v in rec["throughput"].values())
    assert rec["lineage"]["tokenizer_id"] == tokenizer and rec["lineage"]["train_clips"] == 2
    assert rec["config"]["action"]["kind"] == "discrete"
    assert any(k.startswith("val_copy_last_h1") for k in rec["metrics"]), rec["metrics"]
    assert any(k.startswith("val_model_h2") for k in rec["metrics"]), rec["metrics"]
    model = client.get(f"/v1/models/{mid}").json()
    assert model["model_uri"].endswith("world_model.safetensors")
    assert [m["model_id"] for m in client.get("/v1/models").json()] == [mid]
    watcher.drain(idle_polls=2, timeout_s=0.2)
    trained = [e.model_trained for e in seen]
    assert [t.model_id for t in trained] == [mid] and trained[0].family == family
    assert seen[0].event_id == events.effect_id(events.TOPIC_MODELS_TRAINED, mid)  # a re-announce is the same event
    assert dict(trained[0].metrics) == pytest.approx(rec["metrics"])


def test_bad_requests_get_clear_4xx(env) -> None:
    client, store, bus = env

    def err(r, status: int, code: str) -> None:
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code, r.text

    base = {**JOB, "family": "ar", "tokenizer_id": "tok-discrete"}
    err(client.post("/v1/jobs", json={**base, "tokenizer_id": "tok-continuous"}), 422, "tokenizer_kind")
    err(client.post("/v1/jobs", json={**base, "tokenizer_id": "tok-missing"}), 422, "no_tokenized_clips")
    err(client.post("/v1/jobs", json={**base, "clips": {"source": "other"}}), 422, "no_clips")
    err(client.post("/v1/jobs", json={**base, "workers": 64}), 422, "too_many_workers")
    err(client.post("/v1/jobs", json={**base, "size": "huge"}), 422, "invalid_request")
    err(client.post("/v1/jobs", json={**base, "family": "gan"}), 422, "invalid_request")
    err(client.post("/v1/jobs", json={**base, "unknown": 1}), 422, "invalid_request")
    # post-training moved to the posttrain service: the field is unknown here
    err(client.post("/v1/jobs", json={**base, "parent_model": "wm-nope"}), 422, "invalid_request")
    err(client.post("/v1/jobs", json={**base, "dataset": {"name": "nope"}, "clips": None}), 404, "dataset_not_found")
    err(client.get("/v1/jobs/wm-nope"), 404, "model_not_found")
    err(client.get("/v1/models/Bad..ID"), 404, "model_not_found")
    store.delete("raw/v0/actions.json")
    store.delete("raw/v1/actions.json")
    store.delete("raw/v2/actions.json")
    err(client.post("/v1/jobs", json={**base, "actions": True}), 422, "no_actions")


def test_cancel_and_model_not_ready(env) -> None:
    client, store, bus = env
    mid = client.post("/v1/jobs", json={**JOB, "family": "ar", "tokenizer_id": "tok-discrete",
                                         "steps": 100000}).json()["model_id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{mid}").json()["step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    r = client.get(f"/v1/models/{mid}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "model_not_ready"
    assert client.delete(f"/v1/jobs/{mid}").status_code == 200
    assert _wait(client, mid)["state"] == "cancelled"
    assert client.get("/v1/models").json() == []


def test_cli_model_train_show_and_refusals(env) -> None:
    from typer.testing import CliRunner

    from worldloom.cli.main import app as cli
    from worldloom.core.service.background import BackgroundServer

    client, store, bus = env
    settings = TrainSettings(http=HttpSettings(auth_required=False), store=StoreSettings(root=store.root),
                             training={"in_process": True})
    runner = CliRunner()
    with BackgroundServer(build_app(settings, store=store, bus=bus)) as server:
        args = ["model", "train", "--api", server.url, "--family", "ar", "--tokenizer", "tok-discrete",
                "--clips-source", "sim", "--window", "4", "--context-frames", "1", "--horizons", "1,2", "--steps", "4",
                "--batch", "2"]
        result = runner.invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        assert record["state"] == "succeeded" and record["step"] == 4 and record["config"]["fsq_levels"] == [4, 4, 4]
        shown = runner.invoke(cli, ["model", "show", record["model_id"], "--api", server.url])
        assert shown.exit_code == 0 and "val_model_h2_psnr_vs_decoded" in shown.output
        refused = runner.invoke(cli, [*args[:7], "tok-continuous", *args[8:]])
        assert refused.exit_code == 2 and "tokenizer_kind" in refused.output
        missing = runner.invoke(cli, ["model", "show", "wm-nope", "--api", server.url])
        assert missing.exit_code == 2 and "model_not_found" in missing.output


def test_text_conditioning_on_captions(env) -> None:
    from safetensors.numpy import load as load_safetensors

    client, store, bus = env
    # AR: the caption is a prefix token every frame token attends to, so it gets gradients from step 1
    # (the DiT's adaLN-Zero path only once its zero-initialised modulation has moved)
    base = {**JOB, "family": "ar", "tokenizer_id": "tok-discrete", "steps": 3, "eval_horizons": [1]}

    def caption(i: int, text: str) -> None:
        rec = ClipRecord.model_validate_json(store.get_bytes(clip_meta_key(f"c{i}")))
        store.put_bytes(clip_meta_key(rec.clip_id), rec.model_copy(update={"caption": text}).model_dump_json().encode())

    caption(0, "a stripe pattern moving right")
    r = client.post("/v1/jobs", json={**base, "text": True})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_captions", r.text
    caption(1, "a stripe pattern moving left")
    caption(2, "a checkerboard drifting down")
    ids = {}
    for text in (False, True):
        r = client.post("/v1/jobs", json={**base, "text": text})
        assert r.status_code == 202, r.text
        ids[text] = r.json()["model_id"]
        assert _wait(client, ids[text])["state"] == "succeeded"
    weights = {t: load_safetensors(store.get_bytes(f"models/{mid}/model/world_model.safetensors")) for t, mid in ids.items()}
    name = "text.proj.weight"
    # same seed, same init: only the job fed with caption embeddings moved the text projection
    assert np.abs(weights[True][name] - weights[False][name]).max() > 1e-4


def test_reward_heads_train_on_recorded_rewards(env) -> None:
    client, store, bus = env
    base = {**JOB, "family": "diffusion", "tokenizer_id": "tok-continuous", "actions": True, "rewards": True,
            "steps": 4, "eval_horizons": [1]}
    r = client.post("/v1/jobs", json=base)
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_rewards", r.text
    for i in range(3):  # 20 steps each: reward 1 on every 5th step, the episode ends at the last one
        rng = np.random.default_rng(i)
        store.put_bytes(f"raw/v{i}/actions.safetensors", save_safetensors({
            "actions": rng.integers(0, 2, 20), "rewards": (np.arange(20) % 5 == 4).astype(np.float32),
            "terminated": (np.arange(20) == 19).astype(np.uint8)}))
    r = client.post("/v1/jobs", json=base)
    assert r.status_code == 202, r.text
    rec = _wait(client, r.json()["model_id"])
    assert rec["state"] == "succeeded" and rec["config"]["reward_head"] is True, rec
    m = rec["metrics"]
    assert {"val_reward_mse", "val_termination_bce", "val_reward_mse_mean_baseline"} <= set(m), m
