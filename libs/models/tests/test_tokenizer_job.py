"""Tokenizer training jobs: store checkpoints, progress, resume; on Ray Train with a real S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest

from worldloom.core.jobs import read_progress, request_cancel, store_settings_payload
from worldloom.core.settings import StoreSettings
from worldloom.core.store.factory import make_store
from worldloom.models.checkpoint import StoreCheckpoints
from worldloom.models.tokenizer import TokenizerConfig, load_checkpoint
from worldloom.models.tokenizer.job import TokenizerJob, model_key, run_job
from worldloom.models.training import ScalingSpec
from worldloom.testkit.ray_kill import kill_a_worker
from worldloom.video.synthetic import write_video


def _clips(store, tmp_path: Path, n: int = 3) -> list[str]:
    keys = []
    for i in range(n):
        path = write_video(tmp_path / f"v{i}.mp4", width=48, height=48, frames=24, seed=i)
        key = f"clips/c{i}/train.mp4"
        store.put_bytes(key, path.read_bytes())
        keys.append(key)
    return keys


def _job(settings: StoreSettings, keys: list[str], **kw) -> TokenizerJob:
    base = dict(prefix="tokenizers/t1", store=store_settings_payload(settings),
                tokenizer=TokenizerConfig.preset("tiny", "discrete", "4x8x8").replace(channels=16).to_dict(),
                train_keys=keys[:-1], val_keys=keys[-1:], resolution=32, frames=5, batch=2, num_images=1,
                steps=12, checkpoint_every=4, log_every=2)
    base.update(kw)
    return TokenizerJob(**base)


def test_job_config_is_validated(tmp_path: Path) -> None:
    settings = StoreSettings(root=tmp_path)
    with pytest.raises(ValueError, match="frames must be 1 \\+ k"):
        _job(settings, ["a"], frames=6)
    with pytest.raises(ValueError, match="multiple of 8"):
        _job(settings, ["a"], resolution=36)
    with pytest.raises(ValueError, match="no training clips"):
        _job(settings, [], train_keys=[])


def test_in_process_job_writes_progress_checkpoints_and_model(tmp_path: Path) -> None:
    settings = StoreSettings(root=tmp_path / "store")
    store = make_store(settings)
    job = _job(settings, _clips(store, tmp_path))
    run_job(job, ScalingSpec(), name="t", in_process=True)
    progress = read_progress(store, job.prefix)
    assert progress is not None and progress.state == "succeeded" and progress.percent == 100.0
    assert [s for s, _ in progress.curves["loss"]] == [2, 4, 6, 8, 10, 12]
    assert {"val_psnr", "val_ssim", "val_code_usage"} <= set(progress.metrics)
    pointer = StoreCheckpoints(store, job.prefix).latest()
    assert pointer is not None and pointer["step"] == 8  # every 4 steps, the final step is the model itself
    assert {k.key.rsplit("/", 1)[0] for k in store.list(f"{job.prefix}/checkpoints/step-")} == {
        f"{job.prefix}/checkpoints/step-000000004", f"{job.prefix}/checkpoints/step-000000008"}
    store.download(model_key(job.prefix), str(tmp_path / "m.safetensors"))
    store.download(model_key(job.prefix).replace(".safetensors", ".json"), str(tmp_path / "m.json"))
    model, state = load_checkpoint(tmp_path / "m.safetensors")
    assert state.step == 12 and model.config.kind == "discrete"


def test_job_resumes_from_the_last_store_checkpoint(tmp_path: Path) -> None:
    settings = StoreSettings(root=tmp_path / "store")
    store = make_store(settings)
    keys = _clips(store, tmp_path)
    run_job(_job(settings, keys, steps=8), ScalingSpec(), name="t", in_process=True)  # "killed" after 8 steps
    store.delete(model_key("tokenizers/t1"))
    run_job(_job(settings, keys, steps=12), ScalingSpec(), name="t", in_process=True)
    progress = read_progress(store, "tokenizers/t1")
    assert progress.resumed_from_step == [4]  # the last checkpoint of the first run (step 8 was final, not saved)
    assert progress.state == "succeeded" and progress.step == 12


def test_cancel_marker_stops_the_job(tmp_path: Path) -> None:
    settings = StoreSettings(root=tmp_path / "store")
    store = make_store(settings)
    job = _job(settings, _clips(store, tmp_path), steps=200)
    request_cancel(store, job.prefix)
    run_job(job, ScalingSpec(), name="t", in_process=True)
    progress = read_progress(store, job.prefix)
    assert progress.state == "cancelled" and progress.step == 2
    assert not store.exists(model_key(job.prefix))


@pytest.mark.integration
@pytest.mark.timeout(900)  # a local Ray cluster, two DDP workers, a kill and a restart: slow on a busy 2-core box
def test_ray_train_two_workers_survive_a_killed_worker(s3_settings: StoreSettings, tmp_path: Path) -> None:
    """Two DDP workers (gloo) on local Ray; SIGKILL one after a checkpoint: Ray restarts the group and the
    loop resumes from the S3 checkpoint and finishes."""
    store = make_store(s3_settings)
    job = _job(s3_settings, _clips(store, tmp_path), steps=40, checkpoint_every=6, log_every=2)

    def pids_after_checkpoint() -> list[int] | None:
        progress = read_progress(store, job.prefix)
        pointer = StoreCheckpoints(store, job.prefix).latest()
        ok = progress and pointer and progress.step >= pointer["step"] + 2 and len(progress.worker_pids) == 2
        return progress.worker_pids if ok else None

    killed = kill_a_worker(lambda: run_job(job, ScalingSpec(num_workers=2, max_failures=2),
                                           name=f"kill-{s3_settings.bucket}"), pids_after_checkpoint)
    progress = read_progress(store, job.prefix)
    assert progress.state == "succeeded" and progress.step == 40
    assert progress.resumed_from_step and progress.resumed_from_step[0] >= 6
    assert killed not in progress.worker_pids and progress.workers == 2
    assert store.exists(model_key(job.prefix))
