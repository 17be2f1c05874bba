"""`worldloom ingest --episodes DIR` on the real Bridge folder against the real ingest app (HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from worldloom.cli.main import app
from worldloom.core import events
from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import VideoRecord, raw_meta_key
from worldloom.core.service.background import BackgroundServer
from worldloom.core.settings import HttpSettings, StoreSettings
from worldloom.core.store.local import LocalStore
from worldloom.models.world.data import load_episode_arrays
from worldloom.testkit.media import clip_task
from worldloom.testkit.uploads import published
from worldloom.video import synthetic
from worldloom.video.pipeline import VideoTask
from worldloom.video.stages import AnnotateStage

TOKEN = "cli-episodes-token"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, LocalStore, InProcessBus]]:
    from worldloom.ingest.app import build_app
    from worldloom.ingest.settings import IngestSettings

    store = LocalStore(tmp_path / "store")
    bus = InProcessBus()
    settings = IngestSettings(http=HttpSettings(api_tokens=TOKEN), store=StoreSettings(root=tmp_path / "store"))
    with BackgroundServer(build_app(settings, store=store, bus=bus)) as server:
        yield server.url, store, bus


def run(url: str, *args: str) -> Result:
    env = {"WORLDLOOM_CLI_INGEST_URL": url, "WORLDLOOM_CLI_TOKEN": TOKEN, "COLUMNS": "220"}
    return CliRunner().invoke(app, ["ingest", *args], env=env)


def test_bridge_folder_imports_actions_captions_and_splits_once(service, shared_data: Path) -> None:
    url, store, bus = service
    bridge = shared_data / "bridge"
    first = run(url, "--episodes", str(bridge), "--json")
    assert first.exit_code == 0, first.output
    lines = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 15 and {line["result"] for line in lines} == {"new"}

    splits: dict[str, int] = {}
    for line in lines:
        path = Path(line["path"])
        split, stem = path.parts[-3], path.parts[-2]
        ann = json.loads((bridge / "annotation" / split / f"{stem}.json").read_text())
        record = store.get_record(raw_meta_key(line["video_id"]), VideoRecord)
        frames = record.info["frame_count"]
        assert record.attributes["split"] == split and record.attributes["dataset"] == "bridge"
        assert record.attributes["episode"] == stem and record.attributes["instruction"] == ann["texts"][0]
        arrays = load_episode_arrays(store, record.video_id)
        assert arrays is not None
        assert arrays["actions"].shape == (frames - 1, 7) == (len(ann["action"]), 7)
        np.testing.assert_allclose(arrays["actions"], np.asarray(ann["action"]), rtol=1e-6, atol=1e-7)
        assert arrays["states"].shape == (frames, 8)
        splits[split] = splits.get(split, 0) + 1
    assert splits == {"train": 10, "val": 5}
    assert len(published(bus, events.TOPIC_VIDEOS_INGESTED)) == 15

    # curation's caption (what search embeds and matches) starts with the episode's instruction
    record = store.get_record(raw_meta_key(lines[0]["video_id"]), VideoRecord)
    task = VideoTask(record.video_id, Path("unused.mp4"), Path("."), record.info, record.attributes)
    task.clips = [clip_task("c", synthetic.pan_frames())]
    AnnotateStage().process(task)
    assert task.clips[0].caption.startswith(record.attributes["instruction"].rstrip("."))
    assert "bridge" in task.clips[0].tags

    keys = sorted(o.key for o in store.list("raw/"))
    again = run(url, "--episodes", str(bridge), "--json")
    assert again.exit_code == 0, again.output
    assert {json.loads(line)["result"] for line in again.stdout.splitlines() if line.startswith("{")} == {"duplicate"}
    assert sorted(o.key for o in store.list("raw/")) == keys
    assert len(published(bus, events.TOPIC_VIDEOS_INGESTED)) == 15


def test_episode_folder_mistakes(service, shared_data: Path, tmp_path: Path) -> None:
    url, store, _ = service
    assert run(url, "--episodes", str(tmp_path)).exit_code == 2  # no annotation/ folder: a usage error
    assert run(url, "--episodes", str(shared_data / "bridge"), str(tmp_path)).exit_code == 2  # both
    assert run(url, "--env", "CartPole-v1", "--episodes", "many").exit_code == 2
    # a folder whose annotation has no actions, and one whose video is missing: reported, nothing stored
    (tmp_path / "eps/annotation/train").mkdir(parents=True)
    video = tmp_path / "eps/videos/train/1/rgb.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes((shared_data / "bridge/videos/train/83/rgb.mp4").read_bytes())
    (tmp_path / "eps/annotation/train/1.json").write_text(json.dumps({"texts": ["x"], "action": []}))
    (tmp_path / "eps/annotation/train/2.json").write_text(json.dumps({"texts": ["y"], "action": [[0.0]]}))
    wrong = tmp_path / "eps/annotation/train/3.json"
    wrong.write_text(json.dumps({"texts": ["z"], "action": [[0.0]] * 3, "videos": [{"video_path": "videos/train/1/rgb.mp4"}]}))
    result = run(url, "--episodes", str(tmp_path / "eps"), "--json")
    assert result.exit_code == 1, result.output
    by_detail = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [o["result"] for o in by_detail] == ["rejected"] * 3
    details = " ".join(o["detail"] for o in by_detail)
    assert "array_length" in details and "no 'action' list" in details and "no video" in details
    assert list(store.list("raw/")) == []


def test_cli_records_a_scripted_mujoco_arm_at_64x64(service) -> None:
    """`ingest --env Reacher-v5 --policy scripted --env-kwargs ...`: the simulated-arm corpus of issue 12."""
    url, store, _ = service
    result = run(url, "--env", "Reacher-v5", "--policy", "scripted:0.1", "--episodes", "1", "--max-steps", "5",
                 "--env-kwargs", '{"width": 64, "height": 64}', "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert job["state"] == "succeeded", job["errors"]
    meta = VideoRecord.model_validate_json(store.get_bytes(raw_meta_key(job["video_ids"][0])))
    assert (meta.info["width"], meta.info["height"], meta.info["frame_count"]) == (64, 64, 6)
    assert load_episode_arrays(store, meta.video_id)["actions"].shape == (5, 2)
    assert run(url, "--env", "Reacher-v5", "--env-kwargs", "[1]").exit_code == 2
