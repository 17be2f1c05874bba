"""The RayJob launcher's pure parts: KubeRay's status values mapped onto the job's state, the object it
builds, and what it refuses to start with (tests/k8s runs it against a real API server)."""

from __future__ import annotations

import json

import pytest

from worldloom.core.jobs import WorkerSpec
from worldloom.core.jobs.rayjob import RayJobLauncher, job_state
from worldloom.core.settings import RayJobSettings, SecretKeyRef, StoreSettings

S3 = StoreSettings(kind="s3", endpoint="minio:9000", bucket="models", access_key="AKIA-secret-id",
                   secret_key="very-secret-key")
KEYS = dict(store_access_key=SecretKeyRef(name="s3", key="access_key"),
            store_secret_key=SecretKeyRef(name="s3", key="secret_key"))
SETTINGS = RayJobSettings(namespace="ml", image="reg/train:1", gpu_image="reg/train:1-cuda", ray_version="2.60.0",
                          node_selector={"pool": "cpu"}, gpu_node_selector={"pool": "gpu"},
                          gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                          gpu_runtime_class="nvidia", labels={"app": "wl"}, **KEYS)
SPEC = WorkerSpec(job_id="wm-0123456789ab", loop="worldloom.models.world.job:train_loop", config={"steps": 3},
                  plan_key="world-models/wm-0123456789ab/plan.json", workers=3, use_gpu=True)


@pytest.mark.parametrize(("status", "state", "detail"), [
    ({}, "queued", None),
    ({"jobDeploymentStatus": "Initializing"}, "queued", "Initializing"),
    ({"jobDeploymentStatus": "Waiting"}, "queued", "Waiting"),
    ({"jobDeploymentStatus": "Suspended"}, "queued", "Suspended"),
    ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, "running", "PENDING"),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, "running", "RUNNING"),
    ({"jobDeploymentStatus": "Retrying"}, "running", "Retrying"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, "succeeded", None),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, "cancelled", "the Ray job was stopped"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED", "reason": "AppFailed", "message": "boom"},
     "failed", "AppFailed: boom"),
    ({"jobDeploymentStatus": "Failed", "reason": "SubmissionFailed"}, "failed", "SubmissionFailed"),
    ({"jobDeploymentStatus": "ValidationFailed", "message": "bad spec"}, "failed", "bad spec"),
    ({"jobDeploymentStatus": "Reticulating"}, "running", "jobDeploymentStatus 'Reticulating'"),
])
def test_kuberay_status_maps_onto_the_job_state(status, state, detail):
    assert job_state(status) == (state, detail)


def test_the_rayjob_has_the_jobs_workers_gpus_pools_and_no_credentials():
    obj = RayJobLauncher(SETTINGS, S3, ["python", "-m", "driver"]).manifest(SPEC)
    assert obj["metadata"] == {"name": SPEC.job_id, "namespace": "ml",
                               "labels": {"app": "wl", "worldloom.io/job-id": SPEC.job_id}}
    spec = obj["spec"]
    assert spec["entrypoint"] == ("python -m driver --job-id wm-0123456789ab --loop worldloom.models.world.job:train_loop "
                                  "--plan-key world-models/wm-0123456789ab/plan.json --workers 3 --gpu")
    (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert (group["groupName"], group["replicas"], group["minReplicas"], group["maxReplicas"]) == ("gpu", 3, 3, 3)
    pod = group["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["runtimeClassName"] == "nvidia" and pod["tolerations"]
    assert pod["containers"][0]["image"] == "reg/train:1-cuda"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head["template"]["spec"]["nodeSelector"] == {"pool": "cpu"}
    env = {e["name"]: e for e in head["template"]["spec"]["containers"][0]["env"]}
    assert env["WORLDLOOM_JOB_STORE__ENDPOINT"]["value"] == "minio:9000"
    assert env["WORLDLOOM_JOB_STORE__SECRET_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3", "key": "secret_key"}}
    text = json.dumps(obj)
    assert "very-secret-key" not in text and "AKIA-secret-id" not in text

    cpu = RayJobLauncher(SETTINGS, S3, ["python", "-m", "driver"]).manifest(
        WorkerSpec(job_id="tok-1", loop="m:f", config={}, plan_key="p", workers=1))
    (group,) = cpu["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["groupName"] == "cpu" and "nvidia.com/gpu" not in json.dumps(group)
    assert group["template"]["spec"]["nodeSelector"] == {"pool": "cpu"} and "--gpu" not in cpu["spec"]["entrypoint"]


@pytest.mark.parametrize(("settings", "store", "message"), [
    (SETTINGS, StoreSettings(), "store kind s3"),
    (SETTINGS.model_copy(update={"image": ""}), S3, "rayjob.image"),
    (SETTINGS.model_copy(update={"store_secret_key": None}), S3, "never go into the spec"),
    (SETTINGS.model_copy(update={"namespace": None}), S3, "not a pod"),
])
def test_the_launcher_refuses_what_a_rayjob_could_not_run_with(settings, store, message):
    with pytest.raises(ValueError, match=message):
        RayJobLauncher(settings, store, ["python"])


def test_a_worker_spec_names_a_function():
    with pytest.raises(ValueError, match="module:function"):
        WorkerSpec(job_id="j", loop="no-function", config={}, plan_key="p")
