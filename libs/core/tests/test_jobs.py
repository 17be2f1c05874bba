"""The job platform's lifecycle with a small job kind: plan frozen at submit, run, finish, announce,
cancel, resume after a restart (a new manager on the same store)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from worldloom.core.jobs import (
    JobManager,
    JobNotFound,
    JobRecord,
    JobRefused,
    JobRegistry,
    JobRequest,
    LocalLauncher,
    ProgressWriter,
    WorkerSpec,
    read_progress,
)
from worldloom.core.settings import TrainingResources
from worldloom.core.store.local import LocalStore


class EchoRequest(JobRequest):
    width: int = 1


class EchoRecord(JobRecord):
    id_field = "echo_id"

    echo_id: str


class EchoJobs:
    """Writes ``out/<id>.txt`` from its plan; ``gate`` holds a run until released."""

    id_prefix = "echo"

    def __init__(self, store: LocalStore, registry: JobRegistry[EchoRecord]) -> None:
        self.store, self.registry = store, registry
        self.gate = threading.Event()
        self.gate.set()
        self.runs: list[dict[str, Any]] = []
        self.announced: list[str] = []
        self.fail_announce = False
        self.selection = ["a", "b"]  # the "data" a plan selects

    def plan(self, job_id: str, req: EchoRequest) -> tuple[EchoRecord, dict[str, Any]]:
        return (EchoRecord(echo_id=job_id, name=req.name, request=req.model_dump(mode="json"), total_steps=req.steps),
                {"items": list(self.selection), "width": req.width})

    def worker(self, record: EchoRecord, plan: dict[str, Any]) -> WorkerSpec:
        return WorkerSpec(job_id=record.job_id, loop="echo.workers:write", config=plan,
                          plan_key=f"{self.registry.prefix(record.job_id)}/plan.json")

    def run_here(self, spec: WorkerSpec) -> None:
        """The local launcher's runner: the "workers" write the output from the plan."""
        plan, job_id = spec.config, spec.job_id
        self.runs.append(plan)
        writer = ProgressWriter(self.store, self.registry.prefix(job_id), self.registry.raw(job_id).total_steps)
        self.gate.wait(10)
        if writer.cancelled():
            writer.finish("cancelled")
            return
        self.store.put_bytes(self.model_key(job_id), ",".join(plan["items"]).encode())
        writer.finish("succeeded", {"items": len(plan["items"])})

    def model_key(self, job_id: str) -> str:
        return f"out/{job_id}.txt"

    def announce(self, record: EchoRecord) -> None:
        if self.fail_announce:
            raise ConnectionError("bus down")
        self.announced.append(record.job_id)


def _setup(store: LocalStore, **limits: Any) -> tuple[JobManager, EchoJobs, JobRegistry[EchoRecord]]:
    registry = JobRegistry(store, EchoRecord, root="echoes", record_file="record.json", kind="echo")
    hooks = EchoJobs(store, registry)
    return JobManager(store, registry, hooks, TrainingResources(**limits), launcher=LocalLauncher(hooks.run_here),
                      announce_attempts=2, announce_backoff_s=0.01), hooks, registry


def _wait(registry: JobRegistry[EchoRecord], job_id: str, states: tuple[str, ...],
          manager: JobManager | None = None) -> EchoRecord:
    """Until the job is in one of ``states`` (and, given its ``manager``, its run is over)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        record = registry.get(job_id)
        if record.state in states and (manager is None or not manager.is_running(job_id)):
            return registry.get(job_id)
        time.sleep(0.02)
    raise AssertionError(f"{job_id} stuck in {registry.get(job_id).state}")


def test_a_job_runs_from_its_plan_finishes_and_is_announced_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    manager, hooks, registry = _setup(store)
    record = manager.create(EchoRequest(clips={}, steps=3, width=2))
    assert record.job_id.startswith("echo-") and registry.plan(record.job_id) == {"items": ["a", "b"], "width": 2}
    done = _wait(registry, record.job_id, ("succeeded", "failed"), manager)
    assert done.state == "succeeded" and done.announced and done.metrics == {"items": 2.0}
    assert done.model_uri == store.uri(f"out/{record.job_id}.txt") and done.percent == 100.0
    assert hooks.announced == [record.job_id]
    assert manager.resume_unfinished() == [] and hooks.announced == [record.job_id]  # nothing to redo
    manager.close()


def test_resume_uses_the_frozen_plan_not_a_new_selection(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    manager, hooks, registry = _setup(store)
    hooks.gate.clear()
    record = manager.create(EchoRequest(clips={}, steps=3))
    _wait(registry, record.job_id, ("running",))
    manager.close()  # the process "dies" with the job running
    hooks.gate.set()
    time.sleep(0.2)
    registry.update(record.job_id, state="running")  # what a killed process leaves behind
    store.delete(f"out/{record.job_id}.txt")

    manager2, hooks2, registry2 = _setup(store)
    hooks2.selection = ["a", "b", "c", "new"]  # the data grew since the job was submitted
    assert manager2.resume_unfinished() == [record.job_id]
    done = _wait(registry2, record.job_id, ("succeeded", "failed"), manager2)
    assert done.state == "succeeded" and hooks2.runs == [{"items": ["a", "b"], "width": 1}]
    assert store.get_bytes(f"out/{record.job_id}.txt") == b"a,b"
    manager2.close()


def test_an_announcement_that_failed_is_made_at_the_next_start(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    manager, hooks, registry = _setup(store)
    hooks.fail_announce = True
    record = manager.create(EchoRequest(clips={}, steps=1))
    done = _wait(registry, record.job_id, ("succeeded", "failed"), manager)
    # both announcement attempts failed: the model is fine, the record says not announced
    assert registry.get(record.job_id).state == "succeeded" and not registry.get(record.job_id).announced
    assert hooks.announced == [] and done.model_uri
    manager.close()

    manager2, hooks2, registry2 = _setup(store)
    assert manager2.resume_unfinished() == []
    assert hooks2.announced == [record.job_id] and registry2.get(record.job_id).announced
    manager2.close()


def test_cancel_limits_and_unknown_ids(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    manager, hooks, registry = _setup(store, max_workers=2, max_steps=10, allow_gpu=False)
    for req, code in ((EchoRequest(clips={}, workers=3), "too_many_workers"),
                      (EchoRequest(clips={}, steps=11), "too_many_steps"),
                      (EchoRequest(clips={}, use_gpu=True), "gpu_not_allowed")):
        with pytest.raises(JobRefused) as info:
            manager.create(req)
        assert info.value.code == code and info.value.status == 422
    assert registry.ids() == []  # nothing stored for a refused request

    hooks.gate.clear()
    record = manager.create(EchoRequest(clips={}, steps=2))
    _wait(registry, record.job_id, ("running",))
    manager.cancel(record.job_id)
    hooks.gate.set()
    assert _wait(registry, record.job_id, ("cancelled", "succeeded")).state == "cancelled"
    with pytest.raises(JobRefused) as info:
        manager.cancel(record.job_id)
    assert info.value.code == "job_finished" and info.value.status == 409
    assert read_progress(store, registry.prefix(record.job_id)).state == "cancelled"
    for bad in ("nope", "../etc", "UPPER", ""):
        with pytest.raises(JobNotFound) as nf:
            registry.get(bad)
        assert nf.value.status == 404
    manager.close()


def test_request_needs_exactly_one_data_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        EchoRequest()
    with pytest.raises(ValueError, match="exactly one"):
        EchoRequest(clips={}, dataset={"name": "d"})


def test_a_job_whose_workers_finished_is_finished_at_resume_not_run_again(tmp_path: Path) -> None:
    """The service died after the workers wrote the model and progress.json but before it recorded the end
    (or a RayJob finished while the service was down and KubeRay has since deleted it)."""
    store = LocalStore(tmp_path)
    manager, hooks, registry = _setup(store)
    hooks.gate.clear()
    record = manager.create(EchoRequest(clips={}, steps=3))
    _wait(registry, record.job_id, ("running",))
    manager.close()
    hooks.gate.set()  # the workers finish on their own
    time.sleep(0.2)
    registry.update(record.job_id, state="running")  # what the dead service left
    assert read_progress(store, registry.prefix(record.job_id)).state == "succeeded"

    manager2, hooks2, registry2 = _setup(store)
    assert manager2.resume_unfinished() == [record.job_id]
    done = _wait(registry2, record.job_id, ("succeeded", "failed"), manager2)
    assert done.state == "succeeded" and hooks2.runs == [] and hooks2.announced == [record.job_id]
    manager2.close()
