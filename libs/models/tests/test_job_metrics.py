"""A job's final state is counted once per transition (worldloom_jobs_finished_total), which the chart's
job-failure alert reads; updates that keep a job running count nothing."""

from __future__ import annotations

from prometheus_client import REGISTRY

from worldloom.core.store.local import LocalStore
from worldloom.models.world.registry import WorldModelRecord, WorldModelRegistry


def finished(kind: str, state: str) -> float:
    return REGISTRY.get_sample_value("worldloom_jobs_finished_total", {"kind": kind, "state": state}) or 0.0


def test_registry_updates_count_final_states(tmp_path):
    registry = WorldModelRegistry(LocalStore(tmp_path))
    registry.save(WorldModelRecord(model_id="wm-metrics", name="m", family="ar", config={}))
    before = {s: finished("world_model", s) for s in ("failed", "succeeded")}
    registry.update("wm-metrics", state="running", step=3)
    registry.update("wm-metrics", state="failed", error="boom")
    assert finished("world_model", "failed") == before["failed"] + 1
    assert finished("world_model", "succeeded") == before["succeeded"]
    registry.update("wm-metrics", state="failed", error="again")  # no transition: not counted again
    assert finished("world_model", "failed") == before["failed"] + 1
