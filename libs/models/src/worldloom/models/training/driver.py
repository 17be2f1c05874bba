"""The driver of a training job: runs a :class:`~worldloom.core.jobs.WorkerSpec`'s loop on Ray Train.

* here, for the local launcher (:func:`run_here`): the store settings are the service's own;
* in a RayJob (``python -m worldloom.models.training.driver --job-id ... --loop ... --plan-key ...``):
  the entrypoint KubeRay runs on the job's Ray head. It reads its store settings from the
  environment (``WORLDLOOM_JOB_STORE__*``; the keys come from a Secret), the frozen plan from the
  store, and runs the loop on the job's own Ray cluster (``ray.init()`` finds it).

:func:`job_launcher` is what a job service hands its :class:`~worldloom.core.jobs.JobManager`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from worldloom.core.catalog import plan_key
from worldloom.core.jobs import Launcher, LocalLauncher, WorkerSpec, store_settings_payload
from worldloom.core.settings import StoreSettings, TrainingResources
from worldloom.core.store.factory import make_store
from worldloom.models.training.ray_runner import ScalingSpec
from worldloom.models.training.worker import launch

ENTRYPOINT = ["python", "-m", __name__]


def worker_spec(job_id: str, prefix: str, loop: Callable[[dict[str, Any]], None], plan: dict[str, Any],
                workers: int, use_gpu: bool) -> WorkerSpec:
    """The spec of a job under ``prefix`` whose workers run ``loop`` (a module-level function)."""
    return WorkerSpec(job_id=job_id, loop=f"{loop.__module__}:{loop.__qualname__}", config=plan,
                      plan_key=plan_key(prefix), workers=workers, use_gpu=use_gpu)


def resolve_loop(loop: str) -> Callable[[dict[str, Any]], None]:
    module, _, function = loop.partition(":")
    if not module.startswith("worldloom."):
        raise ValueError(f"the loop {loop!r} is not a worldloom function")  # the plan names code, never runs any
    return getattr(importlib.import_module(module), function)


def run_here(spec: WorkerSpec, *, store: StoreSettings, address: str | None = None, in_process: bool = False) -> None:
    """Run the spec's workers from this process (Ray Train on a private local Ray, at ``address``, or in-process)."""
    config = {**spec.config, "store": store_settings_payload(store)}
    launch(resolve_loop(spec.loop), config, ScalingSpec(num_workers=spec.workers, use_gpu=spec.use_gpu),
           name=spec.job_id, address=address, in_process=in_process)


def job_launcher(resources: TrainingResources, store: StoreSettings) -> Launcher:
    """The launcher the deployment asks for: ``local`` (this process drives Ray Train) or ``rayjob``."""
    if resources.launcher == "rayjob":
        from worldloom.core.jobs.rayjob import RayJobLauncher

        return RayJobLauncher(resources.rayjob, store, ENTRYPOINT)
    return LocalLauncher(partial(run_here, store=store, address=resources.ray_address, in_process=resources.in_process))


class DriverEnv(BaseSettings):
    """The RayJob's environment: the store, as the launcher wrote it into the pod spec."""

    model_config = SettingsConfigDict(env_prefix="WORLDLOOM_JOB_", env_nested_delimiter="__", extra="ignore")

    store: StoreSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a training job from its frozen plan (a RayJob's entrypoint)")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--loop", required=True, help="module:function run on every worker")
    parser.add_argument("--plan-key", required=True, help="object key of the job's plan.json")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--in-process", action="store_true", help="no Ray: run the loop here (debugging)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = DriverEnv().store
    plan = json.loads(make_store(store).get_bytes(args.plan_key))
    spec = WorkerSpec(job_id=args.job_id, loop=args.loop, config=plan, plan_key=args.plan_key, workers=args.workers,
                      use_gpu=args.gpu)
    # inside the RayJob's cluster: ray.init() with no address joins it (RAY_ADDRESS or the local head)
    run_here(spec, store=store, address=None if args.in_process else "auto", in_process=args.in_process)


if __name__ == "__main__":
    main()
