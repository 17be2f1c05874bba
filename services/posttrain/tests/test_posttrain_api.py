"""Posttrain API on the embedded stack: tokenized episodes in a local store, an in-process bus, a base
pretrained by the train service, post-training jobs run in-process, the result served by generate."""

from __future__ import annotations

import asyncio
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
from worldloom.core.catalog import TRAIN_RENDITION, ClipRecord, DatasetManifest, clip_meta_key, dataset_key
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.models.tokenizer import CausalVideoTokenizer, TokenizerConfig, save_checkpoint
from worldloom.models.tokenizer.data import moving_pattern_videos
from worldloom.models.tokenizer.shards import write_shard
from worldloom.models.world.registry import WorldModelRecord, WorldModelRegistry
from worldloom.posttrain.app import build_app
from worldloom.posttrain.settings import PosttrainSettings

TOK = "tok-discrete"
BASE = dict(family="ar", tokenizer_id=TOK, size="tiny", window=4, context_frames=1, eval_horizons=[1, 2], steps=6,
            batch=2, checkpoint_every=3, log_every=2, val_fraction=0.34, eval_steps=2, actions=True)
JOB = dict(steps=6, batch=2, checkpoint_every=3, log_every=2, val_every=2, eval_horizons=[1, 2], eval_steps=2,
           val_fraction=0.34)
#: source -> (episodes, action width or None, rewards, captions)
SOURCES = {"sim": (3, 2, False, False), "robot": (3, 4, True, True), "plain": (2, None, False, False),
           "solo": (1, 4, True, True)}


def _tokenizer(store: LocalStore, tmp: Path) -> CausalVideoTokenizer:
    cfg = TokenizerConfig.preset("tiny", "discrete", "4x8x8").replace(channels=16, fsq_levels=(4, 4, 4))
    torch.manual_seed(0)
    model = CausalVideoTokenizer(cfg).eval()
    path = save_checkpoint(tmp / TOK / "tokenizer.safetensors", model)
    for f in (path, path.with_suffix(".json")):
        store.put_bytes(f"tokenizers/{TOK}/model/{f.name}", f.read_bytes())
    return model


def _episodes(store: LocalStore, tokenizer: CausalVideoTokenizer) -> None:
    n = sum(v[0] for v in SOURCES.values())
    videos = moving_pattern_videos(n, 21, 32, seed=1)  # 21 frames -> 6 latent frames at 4x
    i = 0
    for source, (count, width, rewards, captions) in SOURCES.items():
        for j in range(count):
            cid, vid = f"{source}{j}c", f"{source}{j}v"
            rec = ClipRecord(clip_id=cid, video_id=vid, source=source, status="accepted", start_frame=0,
                             end_frame=21, start_s=0, end_s=1, duration_s=1, fps=21, width=32, height=32,
                             renditions={TRAIN_RENDITION: f"clips/{cid}/{TRAIN_RENDITION}"}, config_hash="h",
                             caption=f"the robot moves block {j}" if captions else "",
                             created_at=datetime.now(timezone.utc))
            store.put_bytes(clip_meta_key(cid), rec.model_dump_json().encode())
            if width is not None:
                rng = np.random.default_rng(i)
                arrays = {"actions": rng.standard_normal((20, width)).astype(np.float32)}
                if rewards:
                    arrays["rewards"] = (np.arange(20) % 5 == 4).astype(np.float32)
                    arrays["terminated"] = (np.arange(20) == 19).astype(np.uint8)
                store.put_bytes(f"raw/{vid}/actions.safetensors", save_safetensors(arrays))
                store.put_bytes(f"raw/{vid}/actions.json",
                                json.dumps({"action_space": {"type": "Box", "shape": [width]}}).encode())
            with torch.no_grad():
                tokens = tokenizer.encode(videos[i : i + 1])[1][0].numpy()
            meta = {"clip_id": cid, "video_id": vid, "kind": "discrete", "compression": "4x8x8", "frames": 21,
                    "resolution": 32}
            store.put_bytes(f"tokens/{TOK}/{cid}.tar", write_shard(cid, "discrete", tokens, meta))
            i += 1


def _wait(client: TestClient, mid: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = client.get(f"/v1/jobs/{mid}").json()
        if rec["state"] in ("succeeded", "failed", "cancelled"):
            return rec
        time.sleep(0.2)
    raise AssertionError(f"job {mid} stuck: {rec}")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A store with episodes of four embodiments, a base pretrained on 'sim' (actions of width 2) by the
    train service, and the posttrain API on the same store and bus."""
    from worldloom.train.app import build_app as build_train
    from worldloom.train.settings import TrainSettings

    tmp = tmp_path_factory.mktemp("posttrain")
    store, bus = LocalStore(tmp / "store"), InProcessBus(retry_backoff_s=0.01)
    _episodes(store, _tokenizer(store, tmp))
    seen: list[events.Envelope] = []
    watcher = bus.consumer([events.TOPIC_MODELS_TRAINED, events.TOPIC_DATASETS_CREATED], "t", seen.append)
    common = dict(http=HttpSettings(auth_required=False), store=StoreSettings(root=tmp / "store"),
                  training={"in_process": True, "max_steps": 500})
    with TestClient(build_train(TrainSettings(**common), store=store, bus=bus)) as train:
        r = train.post("/v1/jobs", json={**BASE, "clips": {"source": "sim"}})
        assert r.status_code == 202, r.text
        base = _wait(train, r.json()["model_id"])
        assert base["state"] == "succeeded", base
    from worldloom.core.vectors import VectorIndex

    settings = PosttrainSettings(**common, max_minutes=5)
    index = VectorIndex(str(tmp / "vectors.db"))
    with TestClient(build_app(settings, store=store, bus=bus, index=index)) as client:
        yield client, store, bus, base["model_id"], seen, watcher, tmp


def _second_app(env):
    """Another posttrain app on the same store, bus and index (a server's lifespan closes its service,
    so the module's client keeps its own)."""
    client, store, bus = env[0], env[1], env[2]
    settings = PosttrainSettings(http=HttpSettings(auth_required=False), store=StoreSettings(root=store.root),
                                 training={"in_process": True, "max_steps": 500}, max_minutes=5)
    return build_app(settings, store=store, bus=bus, index=client.app.state.posttrain.search().index)


def _err(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


def test_action_lora_with_scratch_then_full_and_generate_serves_the_adapter(env) -> None:
    """The end-to-end path: a new embodiment (width 4 on a width-2 base) with LoRA kept as an adapter and
    the scratch baseline, then full post-training; the LoRA model is served by generate."""
    client, store, bus, base, seen, watcher, _ = env
    body = {**JOB, "base_model": base, "clips": {"source": "robot"}, "mode": "action", "method": "lora",
            "lora": {"rank": 4, "alpha": 8}, "resize_actions": True, "baselines": ["scratch"]}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["total_steps"] == 12 and r.json()["config"]["action"] == {"kind": "continuous", "dim": 4,
                                                                              "num_actions": 0}
    rec = _wait(client, r.json()["model_id"])
    assert rec["state"] == "succeeded", rec
    mid, m = rec["model_id"], rec["metrics"]
    for prefix in ("base_val_", "val_", "scratch_val_"):  # before / after / scratch, model and copy-last
        assert f"{prefix}model_h1_psnr_vs_decoded" in m and f"{prefix}copy_last_h2_ssim_vs_decoded" in m, m
        assert f"{prefix}loss" in m
    assert m["train_steps"] == 6 and m["scratch_train_steps"] == 6
    assert {"steps_to_loss_target", "steps_to_loss_scratch"} <= set(m)
    curves = rec["curves"]
    assert [s for s, _ in curves["val_loss"]] == [0, 2, 4, 6] == [s for s, _ in curves["scratch_val_loss"]]
    assert curves["loss"] and curves["scratch_loss"]
    # the base and its post-training differ (training moved the model), the adapter alone is stored
    assert m["base_val_loss"] != m["val_loss"]
    assert rec["model_uri"].endswith("/model/adapter.safetensors")
    assert not store.exists(f"models/{mid}/model/world_model.safetensors")
    lineage = rec["lineage"]
    assert lineage["parent_model"] == base and lineage["datasets"] == ["clips:source=robot"]
    assert lineage["tokenizer_id"] == TOK and lineage["train_clips"] == 2 and lineage["val_clips"] == 1
    assert lineage["posttrain"]["mode"] == "action" and lineage["posttrain"]["new_modules"] == ["actions"]
    notes = rec["notes"]
    assert notes["posttrain"]["action_change"]["change"] == "resized"
    prepared = notes["prepared"]
    assert prepared["method"] == "lora" and 0 < prepared["trainable_parameters"] < prepared["total_parameters"]
    watcher.drain(idle_polls=2, timeout_s=0.2)
    trained = [e.model_trained for e in seen if e.WhichOneof("payload") == "model_trained" and
               e.model_trained.model_id == mid]
    assert len(trained) == 1 and trained[0].parent_model == base and list(trained[0].datasets) == ["clips:source=robot"]

    # full post-training: a plain model of the new config, every weight trained
    r = client.post("/v1/jobs", json={**body, "method": "full", "lora": None, "baselines": []})
    assert r.status_code == 202, r.text
    full = _wait(client, r.json()["model_id"])
    assert full["state"] == "succeeded", full
    assert full["model_uri"].endswith("/model/world_model.safetensors")
    assert full["notes"]["prepared"]["trainable_parameters"] == full["notes"]["prepared"]["total_parameters"]
    assert "scratch_val_loss" not in full["metrics"] and "base_val_loss" in full["metrics"]

    # generate serves the LoRA model: its base (cached) + the adapter, actions of the new width
    from kserve import InferInput, InferRequest

    from worldloom.generate.predictor import WorldModelPredictor

    frames = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)

    def infer(model_id: str, width: int):
        p = WorldModelPredictor(model_id, store, embed_text=lambda t: np.zeros((len(t), 384), np.float32))
        p.load()
        inputs = [InferInput(name="context_frames", shape=list(frames.shape), datatype="UINT8",
                             data=frames.reshape(-1).tolist()),
                  InferInput(name="actions", shape=[2, width], datatype="FP32", data=[0.5] * (2 * width))]
        return asyncio.run(p.predict(InferRequest(model_name=model_id, infer_inputs=inputs,
                                                  parameters={"num_frames": 4, "seed": 1})))

    out = infer(mid, 4).outputs[0]
    assert out.name == "frames" and out.shape == [4, 32, 32, 3]
    from kserve.errors import InvalidInput

    with pytest.raises(InvalidInput, match="action width"):
        infer(base, 4)  # the base takes width 2 only
    assert WorldModelRegistry(store).get(mid).lineage.parent_model == base


def test_bad_requests_are_refused_before_training(env) -> None:
    client, store, bus, base, seen, watcher, _ = env
    ok = {**JOB, "base_model": base, "clips": {"source": "robot"}, "mode": "action", "method": "lora"}
    before = set(WorldModelRegistry(store).ids())
    store.put_record(dataset_key("empty", 1), DatasetManifest(name="empty", version=1, created_at=datetime.now(
        timezone.utc), clip_ids=[], clips=[]))
    no_data = {k: v for k, v in ok.items() if k != "clips"}
    _err(client.post("/v1/jobs", json={**no_data, "dataset": {"name": "empty"}}), 422, "no_clips")
    _err(client.post("/v1/jobs", json={**no_data, "dataset": {"name": "nope"}}), 404, "dataset_not_found")
    _err(client.post("/v1/jobs", json={**no_data, "dataset": {"name": "empty", "version": 7}}), 404,
         "dataset_not_found")
    _err(client.post("/v1/jobs", json=no_data), 422, "invalid_request")  # no data at all
    _err(client.post("/v1/jobs", json={**ok, "clips": {"source": "plain"}}), 422, "no_actions")
    _err(client.post("/v1/jobs", json={**ok, "clips": {"source": "sim"}, "mode": "reward"}), 422, "no_rewards")
    _err(client.post("/v1/jobs", json={**ok, "clips": {"source": "plain"}, "mode": "supervised"}), 422, "no_captions")
    _err(client.post("/v1/jobs", json=ok), 422, "action_mismatch")  # width 4 on a width-2 base, no resize
    _err(client.post("/v1/jobs", json={**ok, "resize_actions": True, "action": {"kind": "continuous", "dim": 3}}),
         422, "action_spec_mismatch")
    _err(client.post("/v1/jobs", json={**ok, "clips": {"source": "solo"}, "resize_actions": True}), 422,
         "no_held_out")
    _err(client.post("/v1/jobs", json={**ok, "tokenizer_id": "tok-other"}), 422, "tokenizer_mismatch")
    _err(client.post("/v1/jobs", json={**ok, "base_model": "wm-nope"}), 404, "model_not_found")
    WorldModelRegistry(store).save(WorldModelRecord(model_id="wm-training", name="x", family="ar", state="running"))
    _err(client.post("/v1/jobs", json={**ok, "base_model": "wm-training"}), 409, "model_not_ready")
    lora = {**ok, "resize_actions": True}
    _err(client.post("/v1/jobs", json={**lora, "lora": {"target_modules": ["nothing"]}}), 422, "unknown_target_module")
    _err(client.post("/v1/jobs", json={**lora, "lora": {"target_modules": ["norm1"]}}), 422, "no_linear_layers")
    _err(client.post("/v1/jobs", json={**lora, "lora": {"target_modules": ["actions.proj.0"]}}), 422,
         "target_in_new_module")
    _err(client.post("/v1/jobs", json={**lora, "method": "heads", "lora": {"rank": 2}}), 422, "invalid_request")
    _err(client.post("/v1/jobs", json={**lora, "unknown": 1}), 422, "invalid_request")
    _err(client.post("/v1/jobs", json={**lora, "mode": "sideways"}), 422, "invalid_request")
    _err(client.post("/v1/jobs", json={**lora, "steps": 501}), 422, "too_many_steps")
    _err(client.post("/v1/jobs", json={**lora, "minutes": 6}), 422, "too_many_minutes")
    _err(client.post("/v1/jobs", json={**lora, "workers": 64}), 422, "too_many_workers")
    _err(client.get("/v1/jobs/wm-nope"), 404, "model_not_found")
    _err(client.delete("/v1/jobs/wm-nope"), 404, "model_not_found")
    assert set(WorldModelRegistry(store).ids()) == before | {"wm-training"}  # nothing was planned


def test_search_data_is_saved_as_a_dataset_with_its_query(env) -> None:
    """A clip-id search over the index selects the robot episodes; the hits become dataset version 1 (the
    query in the manifest and in the lineage, datasets.created) and train reward heads with 'heads'."""
    from worldloom.core.catalog import VISUAL_COLLECTION, clip_row, read_clip
    from worldloom.video import visual_embed

    client, store, bus, base, seen, watcher, tmp = env
    search = client.app.state.posttrain.search()  # opens the index (collections made as search makes them)
    rng = np.random.default_rng(3)
    rows = []
    for source in ("robot", "sim"):
        for j in range(SOURCES[source][0]):
            rec = read_clip(store, f"{source}{j}c")
            rows.append(clip_row(rec, "clip", rec.clip_id, rng.standard_normal(visual_embed.DIM).tolist()))
    search.index.upsert(VISUAL_COLLECTION, rows)
    body = {**JOB, "base_model": base, "mode": "reward", "method": "heads", "steps": 3, "resize_actions": True,
            "search": {"clip_id": "robot0c", "top_k": 5, "filters": {"sources": ["robot", "solo"]},
                       "save_as": "robot-search"}}
    _err(client.post("/v1/jobs", json={**body, "search": {"clip_id": "robot0c", "filters": {"sources": ["none"]}}}),
         422, "empty_search")
    _err(client.post("/v1/jobs", json={**body, "search": {"clip_id": "missing0c"}}), 404, "not_found")
    assert not store.exists(dataset_key("robot-search", 1))  # refused jobs save nothing
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    rec = _wait(client, r.json()["model_id"])
    assert rec["state"] == "succeeded", rec
    manifest = DatasetManifest.model_validate_json(store.get_bytes(dataset_key("robot-search", 1)))
    assert sorted(manifest.clip_ids) == ["robot1c", "robot2c"] and manifest.query["clip_id"] == "robot0c"
    assert rec["lineage"]["datasets"] == ["robot-search@v1"] and rec["lineage"]["dataset_query"]["clip_id"] == "robot0c"
    assert rec["config"]["reward_head"] is True and rec["notes"]["prepared"]["new_modules"] == ["actions", "reward"]
    assert {"val_reward_mse", "base_val_reward_mse", "val_reward_mse_mean_baseline"} <= set(rec["metrics"])
    watcher.drain(idle_polls=2, timeout_s=0.2)
    created = [e.dataset_created for e in seen if e.WhichOneof("payload") == "dataset_created"]
    assert [(d.name, d.version, d.clip_count) for d in created] == [("robot-search", 1, 2)]
    # the saved dataset is data for the next job, its query still in the lineage
    r = client.post("/v1/jobs", json={**JOB, "base_model": base, "mode": "unsupervised", "method": "full",
                                      "steps": 2, "dataset": {"name": "robot-search"}, "val_fraction": 0.5})
    assert r.status_code == 202 and r.json()["lineage"]["dataset_query"]["clip_id"] == "robot0c", r.text
    assert _wait(client, r.json()["model_id"])["state"] == "succeeded"


def test_a_held_out_dataset_replaces_the_hashed_split(env) -> None:
    """``held_out``: a saved dataset (a benchmark's val episodes) is what the job evaluates on, and every
    selected clip of its episodes leaves training; refused when it leaves nothing to train on or is missing."""
    import json as _json

    from worldloom.core.catalog import plan_key, read_clip

    client, store, bus, base, seen, watcher, _ = env

    def manifest(name: str, clip_ids: list[str]) -> None:
        clips = []
        for cid in clip_ids:
            rec = read_clip(store, cid)
            clips.append({"clip_id": cid, "video_id": rec.video_id,
                          "renditions": {TRAIN_RENDITION: store.uri(rec.renditions[TRAIN_RENDITION])}})
        store.put_record(dataset_key(name, 1), DatasetManifest(name=name, version=1, created_at=datetime.now(
            timezone.utc), clip_ids=clip_ids, clips=clips))

    manifest("robot-val", ["robot0c"])  # the hashed split would hold out robot2
    manifest("robot-all", ["robot0c", "robot1c", "robot2c"])
    body = {**JOB, "base_model": base, "clips": {"source": "robot"}, "mode": "action", "method": "heads",
            "resize_actions": True, "steps": 2, "held_out": {"name": "robot-val"}}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    mid, lineage = r.json()["model_id"], r.json()["lineage"]
    assert (lineage["train_clips"], lineage["val_clips"]) == (2, 1)
    assert lineage["posttrain"]["held_out"] == "robot-val@v1"
    plan = _json.loads(store.get_bytes(plan_key(f"models/{mid}")))
    assert plan["val_keys"] == [f"tokens/{TOK}/robot0c.tar"]
    assert sorted(plan["train_keys"]) == [f"tokens/{TOK}/robot1c.tar", f"tokens/{TOK}/robot2c.tar"]
    assert _wait(client, mid)["state"] == "succeeded"
    # the default split (no held_out) holds out another episode by hash: the dataset really chose it
    default = client.post("/v1/jobs", json={**body, "held_out": None, "steps": 1}).json()
    assert default["lineage"]["posttrain"]["held_out"] is None
    assert _json.loads(store.get_bytes(plan_key(f"models/{default['model_id']}")))["val_keys"] == [
        f"tokens/{TOK}/robot2c.tar"]
    assert _wait(client, default["model_id"])["state"] == "succeeded"
    _err(client.post("/v1/jobs", json={**body, "held_out": {"name": "robot-all"}}), 422, "no_clips")
    _err(client.post("/v1/jobs", json={**body, "held_out": {"name": "nope"}}), 404, "dataset_not_found")


def test_supervised_heads_and_a_minutes_budget(env) -> None:
    client, store, bus, base, seen, watcher, _ = env
    r = client.post("/v1/jobs", json={**JOB, "base_model": base, "clips": {"source": "robot"}, "mode": "supervised",
                                      "method": "heads", "steps": 2})
    assert r.status_code == 202, r.text
    rec = _wait(client, r.json()["model_id"])
    assert rec["state"] == "succeeded", rec
    assert rec["notes"]["prepared"]["trainable_modules"] == ["actions", "text"]
    # a wall-time budget: steps only cap it; the record says how many were done in that time
    r = client.post("/v1/jobs", json={**JOB, "base_model": base, "clips": {"source": "robot"}, "mode": "unsupervised",
                                      "method": "lora", "minutes": 0.02, "steps": 400, "val_every": 50,
                                      "checkpoint_every": 1000, "log_every": 5})
    assert r.status_code == 202, r.text
    rec = _wait(client, r.json()["model_id"])
    assert rec["state"] == "succeeded", rec
    assert 1 <= rec["metrics"]["train_steps"] < 400 and rec["metrics"]["train_seconds"] >= 1.2, rec["metrics"]
    assert rec["percent"] == 100.0


def test_cancel_and_resume_after_an_interruption(env, monkeypatch) -> None:
    """Cancel through the API; and a job stopped mid-way (the worker killed after a checkpoint) resumes
    from that checkpoint when its loop runs again, in the scratch phase too."""
    from worldloom.core.catalog import cancel_key, progress_key
    from worldloom.core.jobs import read_progress
    from worldloom.models.posttrain import job as ptjob

    client, store, bus, base, seen, watcher, tmp = env
    body = {**JOB, "base_model": base, "clips": {"source": "robot"}, "mode": "action", "method": "lora",
            "resize_actions": True}
    r = client.post("/v1/jobs", json={**body, "steps": 400, "log_every": 1})
    mid = r.json()["model_id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{mid}").json()["step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    _err(client.get(f"/v1/models/{mid}"), 409, "model_not_ready")
    assert client.delete(f"/v1/jobs/{mid}").status_code == 200
    assert _wait(client, mid)["state"] == "cancelled"

    # the loop itself: stop it at the first log step after a checkpoint in the scratch phase, run it again
    plan = WorldModelRegistry(store).plan(mid)
    assert plan is not None
    prefix = "models/wm-resume0000"
    plan = {**plan, "prefix": prefix, "store": {"kind": "local", "root": str(store.root)}, "steps": 4,
            "checkpoint_every": 2, "log_every": 3, "baselines": ["scratch"]}
    real_log = ptjob._Run._log

    def stop_in_scratch(self, phase, values, sec):
        real_log(self, phase, values, sec)
        if phase.name == "scratch" and phase.step >= 3:
            store.put_bytes(cancel_key(prefix), b"{}")

    with monkeypatch.context() as patch:
        patch.setattr(ptjob._Run, "_log", stop_in_scratch)
        ptjob.posttrain_loop(plan)
    first = read_progress(store, prefix)
    assert first is not None and first.state == "cancelled" and "val_loss" in first.metrics
    store.delete(cancel_key(prefix))
    ptjob.posttrain_loop(plan)
    done = read_progress(store, prefix)
    assert done is not None and done.state == "succeeded", done
    assert done.resumed_from_step == [6]  # posttrain 4 steps + scratch checkpoint at its step 2
    assert "scratch_val_loss" in done.metrics and store.exists(f"{prefix}/model/adapter.safetensors")
    assert json.loads(store.get_bytes(progress_key(prefix)))["metrics"]["base_val_loss"] > 0


def test_cli_posttrain_progress_and_model_show_table(env) -> None:
    from typer.testing import CliRunner

    from worldloom.cli.main import app as cli
    from worldloom.core.service.background import BackgroundServer
    from worldloom.train.app import build_app as build_train
    from worldloom.train.settings import TrainSettings

    client, store, bus, base, seen, watcher, tmp = env
    common = dict(http=HttpSettings(auth_required=False), store=StoreSettings(root=store.root),
                  training={"in_process": True})
    runner = CliRunner()
    with BackgroundServer(_second_app(env)) as server, \
            BackgroundServer(build_train(TrainSettings(**common), store=store, bus=bus)) as train:
        args = ["posttrain", "--api", server.url, "--base", base, "--clips-source", "robot", "--mode", "action",
                "--method", "lora", "--rank", "2", "--resize-actions", "--scratch", "--steps", "2", "--batch", "2",
                "--horizons", "1"]
        result = runner.invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        assert record["state"] == "succeeded" and record["lineage"]["posttrain"]["lora"]["rank"] == 2
        shown = runner.invoke(cli, ["model", "show", record["model_id"], "--api", train.url])
        assert shown.exit_code == 0, shown.output
        print(shown.output)  # the before / after / scratch table (pytest -s shows it)
        for text in ("before (base)", "after", "scratch", "model_h1_psnr_vs_decoded", "copy_last_h1_ssim_vs_decoded",
                     "steps_to_loss_target"):
            assert text in shown.output, shown.output
        refused = runner.invoke(cli, [*args[:6], "plain", *args[7:]])
        assert refused.exit_code == 2 and "no_actions" in refused.output, refused.output


def test_cli_posttrain_on_a_text_search(env) -> None:
    """`worldloom posttrain --search "..."`: the captions' MiniLM rows in the index, a text query, the hits
    saved as a dataset version whose query is the text."""
    from typer.testing import CliRunner

    from worldloom.cli.main import app as cli
    from worldloom.core.catalog import TEXT_COLLECTION, clip_row, read_clip
    from worldloom.core.service.background import BackgroundServer
    from worldloom.models.text_embedder import shared_text_embedder

    client, store, bus, base, seen, watcher, tmp = env
    search = client.app.state.posttrain.search()
    records = [read_clip(store, f"robot{j}c") for j in range(3)]
    vectors = shared_text_embedder().encode([r.caption for r in records])
    search.index.upsert(TEXT_COLLECTION, [clip_row(r, "caption", r.clip_id, v.tolist())
                                          for r, v in zip(records, vectors, strict=True)])
    with BackgroundServer(_second_app(env)) as server:
        result = CliRunner().invoke(cli, [
            "posttrain", "--api", server.url, "--base", base, "--search", "the robot moves a block", "--top-k", "3",
            "--save-as", "robot-text", "--mode", "action", "--method", "lora", "--resize-actions", "--steps", "2",
            "--batch", "2", "--horizons", "1", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["state"] == "succeeded" and record["lineage"]["datasets"] == ["robot-text@v1"]
    assert record["lineage"]["dataset_query"]["text"] == "the robot moves a block"
    manifest = DatasetManifest.model_validate_json(store.get_bytes(dataset_key("robot-text", 1)))
    assert sorted(manifest.clip_ids) == ["robot0c", "robot1c", "robot2c"] and manifest.query["top_k"] == 3


def test_a_killed_service_resumes_its_own_jobs_only(env) -> None:
    """A job left 'running' by a killed posttrain service (with a checkpoint) is resumed by the next
    posttrain service, from that checkpoint; a train service on the same registry leaves it alone."""
    from worldloom.core.catalog import cancel_key
    from worldloom.core.jobs import read_progress
    from worldloom.models.posttrain import job as ptjob
    from worldloom.posttrain.schemas import PosttrainRequest
    from worldloom.train.app import build_app as build_train
    from worldloom.train.settings import TrainSettings

    client, store, bus, base, seen, watcher, tmp = env
    svc = client.app.state.posttrain
    req = PosttrainRequest.model_validate({**JOB, "base_model": base, "clips": {"source": "robot"}, "mode": "action",
                                           "method": "lora", "resize_actions": True, "steps": 4,
                                           "checkpoint_every": 2, "log_every": 3})
    record, plan = svc.jobs.hooks.plan("wm-killed00000", req)
    registry = WorldModelRegistry(store)
    registry.save_plan(record.model_id, plan)
    registry.save(record.model_copy(update={"state": "running"}))
    # the dead service's worker got past its step-2 checkpoint, then died (here: stopped at step 3)
    prefix = f"models/{record.model_id}"
    store.put_bytes(cancel_key(prefix), b"{}")
    ptjob.posttrain_loop({**plan, "store": {"kind": "local", "root": str(store.root)}})
    store.delete(cancel_key(prefix))
    stopped = read_progress(store, prefix)
    assert stopped is not None and stopped.step == 3
    common = dict(http=HttpSettings(auth_required=False), store=StoreSettings(root=store.root),
                  training={"in_process": True})
    with TestClient(build_train(TrainSettings(**common), store=store, bus=bus)):
        time.sleep(1.0)
    assert registry.raw(record.model_id).state == "running"  # not the train service's job
    with TestClient(build_app(PosttrainSettings(**common), store=store, bus=bus)) as again:
        done = _wait(again, record.model_id)
    assert done["state"] == "succeeded" and done["resumed_from_step"] == [2], done
    assert store.exists(f"{prefix}/model/adapter.safetensors") and done["metrics"]["train_steps"] == 4


def test_lora_merged_is_a_plain_model(env) -> None:
    from worldloom.models.posttrain.methods import has_adapters
    from worldloom.models.world.registry import has_adapter, load_world_model

    client, store, bus, base, seen, watcher, _ = env
    r = client.post("/v1/jobs", json={**JOB, "base_model": base, "clips": {"source": "robot"}, "mode": "unsupervised",
                                      "method": "lora", "merge": True, "steps": 2, "eval_horizons": [1]})
    assert r.status_code == 202, r.text
    rec = _wait(client, r.json()["model_id"])
    assert rec["state"] == "succeeded" and rec["model_uri"].endswith("/model/world_model.safetensors"), rec
    assert not has_adapter(store, rec["model_id"])
    loaded = load_world_model(store, rec["model_id"])
    assert not has_adapters(loaded.model) and loaded.model.config.action == load_world_model(store, base).model.config.action
    _err(client.post("/v1/jobs", json={**JOB, "base_model": base, "clips": {"source": "robot"},
                                       "mode": "unsupervised", "method": "full", "merge": True}), 422, "invalid_request")
