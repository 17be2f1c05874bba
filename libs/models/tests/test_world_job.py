"""World-model pretraining job: shards -> windows (+ pooled actions), in-process training, resume, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_safetensors

from worldloom.core.jobs import read_progress, request_cancel, store_settings_payload
from worldloom.core.settings import StoreSettings
from worldloom.core.store.factory import make_store
from worldloom.models.checkpoint import StoreCheckpoints
from worldloom.models.tokenizer import CausalVideoTokenizer, TokenizerConfig, save_checkpoint
from worldloom.models.tokenizer.data import moving_pattern_videos
from worldloom.models.tokenizer.shards import write_shard
from worldloom.models.training import ScalingSpec
from worldloom.models.world import ActionSpec, ARConfig, ARWorldModel, DiffusionWorldModel, DiTConfig, Sampling
from worldloom.models.world.data import WindowSampler, load_sequences, pool_actions
from worldloom.models.world.evaluation import (
    evaluate_prediction,
    flat_metrics,
    horizon_video_frames,
    shuffled_actions,
)
from worldloom.models.world.factory import load_world_checkpoint
from worldloom.models.world.job import WorldModelJob, model_key, run_job

FRAMES, SIZE = 33, 32  # 9 latent frames of 4x4 with 4x8x8 compression


def _tokenizer(kind: str) -> CausalVideoTokenizer:
    torch.manual_seed(0)
    cfg = TokenizerConfig.preset("tiny", kind, "4x8x8").replace(channels=16, fsq_levels=(4, 4, 4), latent_channels=4)
    return CausalVideoTokenizer(cfg).eval()


def _setup(tmp_path: Path, kind: str, n: int = 3, actions: bool = False):
    """Store with a tiny tokenizer (tokenizers/tok/...) and ``n`` shards of encoded synthetic videos."""
    settings = StoreSettings(root=tmp_path / "store")
    store = make_store(settings)
    tok = _tokenizer(kind)
    path = save_checkpoint(tmp_path / "tok" / "tokenizer.safetensors", tok)
    store.put_bytes("tokenizers/tok/model/tokenizer.safetensors", path.read_bytes())
    store.put_bytes("tokenizers/tok/model/tokenizer.json", path.with_suffix(".json").read_bytes())
    videos = moving_pattern_videos(n, FRAMES, SIZE, seed=1)
    keys = []
    with torch.no_grad():
        enc = tok.encode(videos)
    for i in range(n):
        array = enc[1][i].numpy() if kind == "discrete" else enc[i].numpy()
        meta = {"clip_id": f"c{i}", "video_id": f"v{i}", "tokenizer_id": "tok", "kind": kind,
                "shape": list(array.shape), "frames": FRAMES, "resolution": SIZE, "compression": "4x8x8",
                "start_s": 0.0, "end_s": 1.0}
        key = f"tokens/tok/c{i}.tar"
        store.put_bytes(key, write_shard(f"c{i}", kind, array, meta))
        keys.append(key)
        if actions:
            steps = np.random.default_rng(i).standard_normal((FRAMES - 1, 2)).astype(np.float32)
            store.put_bytes(f"raw/v{i}/actions.safetensors", save_safetensors({"actions": steps}))
            store.put_bytes(f"raw/v{i}/actions.json", json.dumps({"fps": 30.0}).encode())
    return settings, store, keys


def _ar_model(**kw) -> dict:
    return ARConfig(vocab_size=64, tokens_per_frame=16, max_frames=9, n_layer=1, d_model=32, n_head=2,
                    text_dim=None, **kw).to_dict()


def _dit_model(**kw) -> dict:
    return DiTConfig(in_channels=4, latent_size=(4, 4), patch_size=2, max_frames=4, n_future=3, n_layer=1,
                     d_model=32, n_head=2, text_dim=None, **kw).to_dict()


def _job(settings: StoreSettings, keys: list[str], family: str = "ar", **kw) -> WorldModelJob:
    base = dict(prefix="world_models/w1", store=store_settings_payload(settings), family=family,
                model=_ar_model() if family == "ar" else _dit_model(), tokenizer_id="tok",
                train_keys=keys[:-1], val_keys=keys[-1:], window=4, context_frames=1, batch=2, steps=8,
                lr=1e-3, checkpoint_every=4, log_every=2, eval_horizons=[1, 4, 8], eval_sequences=2, eval_steps=2)
    base.update(kw)
    return WorldModelJob(**base)


# ------------------------------------------------------------------------------------------------- data


def test_pool_actions_mean_last_and_truncation() -> None:
    steps = np.arange(12, dtype=np.float32).reshape(12, 1)  # step i leads frame i -> i + 1
    pooled, usable = pool_actions(steps, latent_frames=4, tc=4, pool="mean")
    assert usable == 4 and pooled[:, 0].tolist() == [1.5, 5.5, 9.5]  # steps 0-3, 4-7, 8-11
    pooled, usable = pool_actions(steps, latent_frames=4, tc=4, offset=2, pool="mean")
    assert usable == 3 and pooled[:, 0].tolist() == [3.5, 7.5]  # the third group would need steps 10-13
    ids = np.arange(12, dtype=np.int64)
    pooled, usable = pool_actions(ids, latent_frames=4, tc=4, pool="last")
    assert pooled.tolist() == [3, 7, 11] and pooled.dtype == np.int64
    rewards = np.ones(12, np.float32)  # rewards add up over the 4 steps into a latent frame, flags take the max
    assert pool_actions(rewards, latent_frames=4, tc=4, pool="sum")[0].tolist() == [4.0, 4.0, 4.0]
    done = (np.arange(12) == 6).astype(np.uint8)
    assert pool_actions(done, latent_frames=4, tc=4, pool="max")[0].tolist() == [0.0, 1.0, 0.0]


def test_load_sequences_with_actions_and_deterministic_sampler(tmp_path: Path) -> None:
    _, store, keys = _setup(tmp_path, "discrete", actions=True)
    seqs = load_sequences(store, keys, actions="mean")
    assert [s.frames for s in seqs] == [9, 9, 9] and seqs[0].data.shape == (9, 4, 4)
    assert seqs[0].actions is not None and seqs[0].actions.shape == (8, 2)
    raw = np.random.default_rng(0).standard_normal((FRAMES - 1, 2)).astype(np.float32)
    assert np.allclose(seqs[0].actions[1].numpy(), raw[4:8].mean(0))
    a = WindowSampler(seqs, 4, 3, seed=5, rank=0)
    first = [next(a) for _ in range(6)]
    b = WindowSampler(seqs, 4, 3, seed=5, rank=0, start_step=3)  # a resumed run
    for want in first[3:]:
        got = next(b)
        assert torch.equal(got["frames"], want["frames"]) and torch.equal(got["actions"], want["actions"])
    assert first[0]["frames"].shape == (3, 4, 4, 4) and first[0]["actions"].shape == (3, 3, 2)
    other = WindowSampler(seqs, 4, 3, seed=5, rank=1).batch_at(0)
    assert not torch.equal(other["index"], first[0]["index"])  # ranks see different windows
    with pytest.raises(ValueError, match="no actions"):
        store.delete("raw/v1/actions.safetensors")
        load_sequences(store, keys, actions="mean")


# ------------------------------------------------------------------------------------------------- jobs


def test_job_config_is_validated(tmp_path: Path) -> None:
    settings = StoreSettings(root=tmp_path)
    with pytest.raises(ValueError, match="family"):
        _job(settings, ["a", "b"], family="gan", model={})
    with pytest.raises(ValueError, match="unknown ARConfig fields"):
        _job(settings, ["a", "b"], model={"bogus": 1})
    with pytest.raises(ValueError, match="context_frames < window"):
        _job(settings, ["a", "b"], context_frames=4)
    with pytest.raises(ValueError, match="max_frames"):
        _job(settings, ["a", "b"], window=12)
    with pytest.raises(ValueError, match="max_frames"):
        _job(settings, ["a", "b"], eval_horizons=[1, 9])
    with pytest.raises(ValueError, match="no training shards"):
        _job(settings, [], train_keys=[])
    with pytest.raises(ValueError, match="steps"):
        _job(settings, ["a", "b"], steps=0)


@pytest.mark.parametrize("family", ["ar", "diffusion"])
def test_in_process_job_writes_progress_checkpoints_model_and_eval(tmp_path: Path, family: str) -> None:
    kind = "discrete" if family == "ar" else "continuous"
    settings, store, keys = _setup(tmp_path, kind)
    job = _job(settings, keys, family)
    run_job(job, ScalingSpec(), name="w", in_process=True)
    progress = read_progress(store, job.prefix)
    assert progress is not None and progress.state == "succeeded", progress and progress.error
    assert [s for s, _ in progress.curves["loss"]] == [2, 4, 6, 8]
    rate = "tokens_per_s" if family == "ar" else "latent_frames_per_s"
    assert rate in progress.curves
    m = progress.metrics
    assert "val_loss" in m
    for h in (1, 4, 8):
        for name in ("model", "copy_last"):
            assert f"val_{name}_h{h}_psnr_vs_decoded" in m and f"val_{name}_h{h}_ssim_vs_decoded" in m
    pointer = StoreCheckpoints(store, job.prefix).latest()
    assert pointer is not None and pointer["step"] == 4
    assert set(pointer["files"]) == {"world_model.safetensors", "world_model.optim.safetensors", "world_model.json"}
    store.download(model_key(job.prefix), str(tmp_path / "m.safetensors"))
    store.download(model_key(job.prefix).replace(".safetensors", ".json"), str(tmp_path / "m.json"))
    model, state = load_world_checkpoint(tmp_path / "m.safetensors")
    assert state.step == 8 and state.extra["tokenizer_id"] == "tok"
    assert type(model).__name__ == ("ARWorldModel" if family == "ar" else "DiffusionWorldModel")


def test_job_resumes_with_the_same_data_order(tmp_path: Path) -> None:
    settings, store, keys = _setup(tmp_path, "discrete", actions=True)
    model = _ar_model(action=ActionSpec.continuous(2))
    kw = dict(model=model, eval_horizons=[], checkpoint_every=3)
    run_job(_job(settings, keys, steps=8, **kw), ScalingSpec(), name="w", in_process=True)  # "killed" at 8
    full = read_progress(store, "world_models/w1")
    store.delete(model_key("world_models/w1"))
    # a straight run to compare the loss curve with
    straight = _job(settings, keys, steps=8, prefix="world_models/w2", **kw)
    run_job(straight, ScalingSpec(), name="w", in_process=True)
    run_job(_job(settings, keys, steps=8, **kw), ScalingSpec(), name="w", in_process=True)
    resumed = read_progress(store, "world_models/w1")
    assert resumed.resumed_from_step == [6] and resumed.state == "succeeded" and resumed.step == 8
    # same data and same optimiser state after the restart -> the same losses as the uninterrupted run
    a = dict(read_progress(store, "world_models/w2").curves["loss"])
    b = dict(resumed.curves["loss"])
    assert b[8] == pytest.approx(a[8], rel=1e-4, abs=1e-5)
    assert dict(full.curves["loss"])[8] == pytest.approx(a[8], rel=1e-4, abs=1e-5)


def test_cancel_marker_stops_the_job(tmp_path: Path) -> None:
    settings, store, keys = _setup(tmp_path, "discrete", n=2)
    job = _job(settings, keys, steps=200)
    request_cancel(store, job.prefix)
    run_job(job, ScalingSpec(), name="w", in_process=True)
    progress = read_progress(store, job.prefix)
    assert progress.state == "cancelled" and progress.step == 2
    assert not store.exists(model_key(job.prefix))


def test_missing_tokenizer_fails_before_training(tmp_path: Path) -> None:
    settings, store, keys = _setup(tmp_path, "discrete", n=2)
    with pytest.raises(ValueError, match="tokenizer 'nope' has no model file"):
        run_job(_job(settings, keys, tokenizer_id="nope"), ScalingSpec(), name="w", in_process=True)


# ------------------------------------------------------------------------------------------- evaluation


def test_evaluation_per_horizon_and_copy_last_baseline(tmp_path: Path) -> None:
    _, store, keys = _setup(tmp_path, "discrete", n=2)
    seqs = load_sequences(store, keys)
    tok = _tokenizer("discrete")
    torch.manual_seed(0)
    model = ARWorldModel(ARConfig.from_dict(_ar_model()))
    real = list(moving_pattern_videos(2, FRAMES, SIZE, seed=1))
    res = evaluate_prediction(model, tok, seqs, context_frames=1, horizons=(1, 4, 8), real_videos=real)
    assert res["horizons"] == [1, 4, 8] and res["sequences"] == 2 and res["video_frames_per_latent"] == 4
    assert res["video_frames"] == {1: (1, 4), 4: (13, 16), 8: (29, 32)}
    assert horizon_video_frames(1, 2, 4) == (5, 8)
    for name in ("model", "copy_last"):
        for h in (1, 4, 8):
            v = res[name][h]  # an unconditioned model: no action keys
            assert set(v) == {"psnr_vs_decoded", "ssim_vs_decoded", "psnr_vs_real", "ssim_vs_real",
                              "fg_psnr_vs_real", "fg_pixels_vs_real"}
            assert all(np.isfinite(x) for x in v.values())
    # deterministic for a seed (greedy AR); without real frames only the decoded numbers
    assert evaluate_prediction(model, tok, seqs, horizons=(1, 4, 8))["model"] == \
        {h: {k: x for k, x in v.items() if k.endswith("decoded")} for h, v in res["model"].items()}
    with pytest.raises(ValueError, match="max_frames"):
        evaluate_prediction(model, tok, seqs, context_frames=2, horizons=(8,))


def _rod_videos(n: int, frames: int = FRAMES, size: int = SIZE) -> list[torch.Tensor]:
    """Real frames as a simulator renders them: a white background and a 1-px dark rod 10 px long that moves
    one pixel right per frame (from column ``2 + i``); ``[3, T, size, size]`` in [-1, 1]."""
    out = []
    for i in range(n):
        v = torch.ones(3, frames, size, size)
        for t in range(frames):
            v[:, t, 4:14, (2 + i + t) % size] = -0.6
        out.append(v)
    return out


def test_evaluation_foreground_psnr_is_scored_on_the_real_episodes_moving_pixels(tmp_path: Path) -> None:
    _, store, keys = _setup(tmp_path, "discrete", n=3)
    seqs = load_sequences(store, keys)
    tok = _tokenizer("discrete")
    torch.manual_seed(0)
    model = ARWorldModel(ARConfig.from_dict(_ar_model()))
    blank = torch.ones(3, FRAMES, SIZE, SIZE)  # nothing moves: no foreground anywhere
    res = evaluate_prediction(model, tok, seqs, horizons=(1, 4), real_videos=[_rod_videos(1)[0], None, blank])
    assert res["sequences"] == 3 and res["real_sequences"] == 2
    for h in (1, 4):
        copy = res["copy_last"][h]
        # one sequence has foreground: 4 frames x (10 + 2) x 3 px (the rod grown by 1 px); the blank one adds 0
        assert copy["fg_pixels_vs_real"] == 4 * 12 * 3 == res["model"][h]["fg_pixels_vs_real"]
        # copying the last frame keeps the background right (whole-frame PSNR is high) and the rod wrong
        assert copy["psnr_vs_real"] > 20.0 and copy["fg_psnr_vs_real"] < copy["psnr_vs_real"] - 15.0
    only_blank = evaluate_prediction(model, tok, seqs, horizons=(1,), real_videos=[blank])
    assert only_blank["copy_last"][1]["fg_psnr_vs_real"] is None  # not measured, not a number
    flat = flat_metrics(only_blank, "val_")
    assert "val_copy_last_h1_fg_psnr_vs_real" not in flat and flat["val_copy_last_h1_fg_pixels_vs_real"] == 0.0
    assert flat["val_copy_last_h1_psnr_vs_real"] > 90.0 and flat["val_eval_real_sequences"] == 1.0
    assert "val_model_h1_fg_psnr_vs_real" in flat_metrics(res, "val_")


def test_shuffled_actions_is_a_seeded_permutation_of_the_rows() -> None:
    acts = torch.arange(24, dtype=torch.float32).view(3, 4, 2)
    a, b = shuffled_actions(acts, 7), shuffled_actions(acts, 7)
    assert torch.equal(a, b) and a.shape == acts.shape and not torch.equal(a, acts)
    rows = sorted(tuple(r) for r in a.reshape(12, 2).tolist())
    assert rows == sorted(tuple(r) for r in acts.reshape(12, 2).tolist())  # the same rows, across sequences
    assert {int(r[0]) // 8 for r in a[0].tolist()} != {0}  # sequence 0 now holds rows of others
    ids = torch.arange(12).view(3, 4)
    assert sorted(shuffled_actions(ids, 1).flatten().tolist()) == list(range(12))  # discrete ids too


def test_action_gain_for_action_conditioned_models_with_real_frames(tmp_path: Path) -> None:
    _, store, keys = _setup(tmp_path, "discrete", n=3, actions=True)
    seqs = load_sequences(store, keys, actions="mean")
    tok = _tokenizer("discrete")
    real = list(moving_pattern_videos(3, FRAMES, SIZE, seed=1))  # the frames _setup encoded
    torch.manual_seed(0)
    acting = ARWorldModel(ARConfig.from_dict(_ar_model(action=ActionSpec.continuous(2))))
    res = evaluate_prediction(acting, tok, seqs, horizons=(1, 4), real_videos=real)
    gains = []
    for h in (1, 4):
        v = res["model"][h]
        assert v["action_gain_db"] == pytest.approx(v["psnr_vs_real"] - v["psnr_vs_real_shuffled_actions"])
        assert "action_gain_db" not in res["copy_last"][h]
        gains.append(v["action_gain_db"])
    assert any(abs(g) > 1e-6 for g in gains)  # a random action encoder moves the prediction
    assert flat_metrics(res, "val_")["val_model_h4_action_gain_db"] == gains[1]
    # none without real frames, and none for a model without action conditioning (even given actions)
    assert "action_gain_db" not in evaluate_prediction(acting, tok, seqs, horizons=(1,))["model"][1]
    torch.manual_seed(0)
    plain = ARWorldModel(ARConfig.from_dict(_ar_model()))
    keys_plain = set(evaluate_prediction(plain, tok, seqs, horizons=(1,), real_videos=real)["model"][1])
    assert not keys_plain & {"action_gain_db", "psnr_vs_real_shuffled_actions"}


def test_action_gain_is_zero_for_a_diffusion_model_whose_actions_do_nothing(tmp_path: Path) -> None:
    """The shuffled rollout draws the same sampling noise: a model that ignores its actions gains exactly 0
    (a different noise draw would show up as a spurious gain)."""
    _, store, keys = _setup(tmp_path, "continuous", n=2, actions=True)
    seqs = load_sequences(store, keys, actions="mean")
    tok = _tokenizer("continuous")
    real = list(moving_pattern_videos(2, FRAMES, SIZE, seed=1))
    torch.manual_seed(0)
    model = DiffusionWorldModel(DiTConfig.from_dict(_dit_model(action=ActionSpec.continuous(2))))
    with torch.no_grad():  # adaLN-Zero starts with every block switched off: switch them on, so actions matter
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.2)
    res = evaluate_prediction(model, tok, seqs, horizons=(1, 3), real_videos=real,
                              sampling=Sampling(steps=2))
    assert all(res["model"][h]["action_gain_db"] != 0.0 for h in (1, 3))
    assert model.actions is not None
    with torch.no_grad():
        last = model.actions.proj[-1]
        last.weight.zero_()
        last.bias.zero_()  # every action now embeds to 0
    deaf = evaluate_prediction(model, tok, seqs, horizons=(1, 3), real_videos=real, sampling=Sampling(steps=2))
    assert [deaf["model"][h]["action_gain_db"] for h in (1, 3)] == [0.0, 0.0]


@pytest.mark.integration
@pytest.mark.timeout(900)  # a local Ray cluster, two DDP workers, a kill and a restart: slow on a busy 2-core box
def test_ray_two_workers_resume_after_a_killed_worker(tmp_path: Path, s3_settings: StoreSettings) -> None:
    """World-model job on 2 Ray Train workers (DDP, gloo) with checkpoints in real S3: SIGKILL a worker after a
    checkpoint, Ray restarts the group, the loop resumes from the checkpoint and the job finishes."""
    from worldloom.testkit.ray_kill import kill_a_worker

    local, local_store, keys = _setup(tmp_path, "discrete")
    store = make_store(s3_settings)
    for info in local_store.list(""):
        store.put_bytes(info.key, local_store.get_bytes(info.key))
    # 100 short steps: long enough that the poller reliably sees a live group past its first checkpoint
    job = _job(s3_settings, keys, steps=100, checkpoint_every=6, log_every=2, eval_horizons=[1])

    def pids_after_checkpoint() -> list[int] | None:
        progress = read_progress(store, job.prefix)
        pointer = StoreCheckpoints(store, job.prefix).latest()
        ok = progress and pointer and progress.step >= pointer["step"] + 2 and len(progress.worker_pids) == 2
        return progress.worker_pids if ok else None

    killed = kill_a_worker(lambda: run_job(job, ScalingSpec(num_workers=2, max_failures=2),
                                           name=f"wm-kill-{s3_settings.bucket}"), pids_after_checkpoint)
    progress = read_progress(store, job.prefix)
    assert progress.state == "succeeded" and progress.step == job.steps
    assert progress.resumed_from_step and progress.resumed_from_step[0] >= 6
    assert killed not in progress.worker_pids
    assert store.exists(model_key(job.prefix))
