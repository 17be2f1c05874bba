"""Training jobs as RayJobs through the `kubernetes` client, against the real kube-apiserver.

The tokenize service runs with the settings the chart renders for its pod (ci/rayjob-values.yaml, the
store pointed at the test S3 server, its Secret keys read back from the server as a kubelet would), a
real service-account token of the chart's tokenize account (TokenRequest) in a kubeconfig -- the one
thing that differs from a pod, which would use the mounted token -- and real curated clips in S3.

No KubeRay operator runs: the tests play its part by writing the RayJob's status subresource, and play
the Ray head by running the RayJob's entrypoint command with the head container's environment
(``--in-process`` appended: no Ray cluster here). So these tests prove the object the service creates
(spec, RBAC, no credentials in it), how the job's state follows the status KubeRay would write, cancel,
re-attachment after a crash, and that the entrypoint trains from the frozen plan with the pod's
environment. They do not prove that KubeRay accepts the spec beyond its CRD schema, that pods schedule
on a GPU pool, or that Ray Train runs across the worker pods.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from worldloom.core.bus.inprocess import InProcessBus
from worldloom.core.catalog import cancel_key, tokenizer_model_key, tokenizer_prefix
from worldloom.core.settings import HttpSettings
from worldloom.core.store.factory import make_store
from worldloom.testkit.chart import RELEASE, Release, deployment_container
from worldloom.testkit.clips import synthetic_clip
from worldloom.testkit.ports import LOOPBACK, free_port
from worldloom.testkit.process import ManagedProcess
from worldloom.tokenize.app import build_app
from worldloom.tokenize.settings import TokenizeSettings

pytestmark = pytest.mark.integration

FULLNAME = f"{RELEASE}-worldloom"
PREFIX = "WORLDLOOM_TOKENIZE_"
TRAIN = dict(clips={"source": "synthetic"}, kind="discrete", compression="4x8x8", resolution=32, frames=5, steps=6,
             batch=2, num_images=1, checkpoint_every=3, log_every=2, val_fraction=0.34, workers=2, use_gpu=True)


@pytest.fixture(scope="module")
def jobs(control_plane, s3_server, tmp_path_factory):
    """The rayjob profile installed with the test S3 as its external store; the tokenize pod's env."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    r = Release(control_plane, "rayjob", args=(
        "--set", "objectStore.mode=external", "--set", f"objectStore.external.endpoint={s3_server['endpoint']}",
        "--set", "objectStore.external.secure=false", "--set", "objectStore.existingSecret=worldloom-s3",
        "--set", f"objectStore.bucket={bucket}"))
    control_plane.kubectl("create", "namespace", r.namespace)
    control_plane.kubectl("create", "secret", "generic", "worldloom-s3", "-n", r.namespace,
                          f"--from-literal=access_key={s3_server['access_key']}",
                          f"--from-literal=secret_key={s3_server['secret_key']}")
    r.install()
    env = r.pod_env(deployment_container(r.applied(), "tokenize"))
    tmp = tmp_path_factory.mktemp("rayjobs")
    kubeconfig = control_plane.write_kubeconfig(tmp / "tokenize-sa", control_plane.token(f"{FULLNAME}-tokenize", r.namespace),
                                                namespace=r.namespace)
    store_env = {k: v for k, v in env.items() if k.startswith(PREFIX + "STORE__")}
    store = make_store(settings_from(store_env, kubeconfig).store)
    for i in range(3):
        synthetic_clip(store, tmp, i)
    yield r, env, kubeconfig, store
    r.helm("uninstall", check=False)


def settings_from(env: dict[str, str], kubeconfig: Path) -> TokenizeSettings:
    """TokenizeSettings from the pod's store and training variables, as the service loads them."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(PREFIX)}
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith((PREFIX + "STORE__", PREFIX + "TRAINING__"))})
        os.environ[PREFIX + "TRAINING__RAYJOB__KUBECONFIG"] = str(kubeconfig)
        return TokenizeSettings(http=HttpSettings(auth_required=False), consume=False)
    finally:
        for k in [k for k in os.environ if k.startswith(PREFIX)]:
            del os.environ[k]
        os.environ.update(saved)


def rayjob(r: Release, job_id: str) -> dict | None:
    return r.get("rayjob.ray.io", job_id, check=False)


def set_status(r: Release, job_id: str, **status) -> None:
    """What the KubeRay operator would write."""
    r.cp.kubectl("patch", "rayjob.ray.io", job_id, "-n", r.namespace, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": status}))


def wait_for(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def state(client, job_id: str) -> dict:
    return client.get(f"/v1/tokenizers/{job_id}").json()


@pytest.fixture
def service(jobs):
    r, env, kubeconfig, store = jobs

    def make(kubeconfig_path: Path = kubeconfig) -> TestClient:
        settings = settings_from(env, kubeconfig_path)
        return TestClient(build_app(settings, store=store, bus=InProcessBus(retry_backoff_s=0.01)))

    return make


def test_a_job_becomes_a_rayjob_and_its_state_follows_the_status(jobs, service):
    r, env, _, store = jobs
    with service() as client:
        answer = client.post("/v1/tokenizers", json={**TRAIN, "name": "on-a-rayjob"})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["tokenizer_id"]
        obj = wait_for(lambda: rayjob(r, job_id), "the RayJob")

        # the object: the job's worker loop from its plan, its worker count and GPUs, the pools, the images
        spec = obj["spec"]
        argv = shlex.split(spec["entrypoint"])
        assert argv == ["python", "-m", "worldloom.models.training.driver", "--job-id", job_id,
                        "--loop", "worldloom.models.tokenizer.job:train_loop",
                        "--plan-key", f"{tokenizer_prefix(job_id)}/plan.json", "--workers", "2", "--gpu"]
        assert store.exists(f"{tokenizer_prefix(job_id)}/plan.json")
        (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
        assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 2, 2)
        worker = group["template"]["spec"]
        (wc,) = worker["containers"]
        assert wc["resources"]["limits"]["nvidia.com/gpu"] == wc["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert worker["nodeSelector"] == {"worldloom.io/pool": "gpu"} and worker["runtimeClassName"] == "nvidia"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker["tolerations"]
        head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert head["nodeSelector"] == {"worldloom.io/pool": "cpu"} and "nvidia.com/gpu" not in str(head)
        image = deployment_container(r.applied(), "tokenize")["image"]
        assert head["containers"][0]["image"] == image and wc["image"] == f"{image}-cuda"
        assert spec["rayClusterSpec"]["rayVersion"] and spec["shutdownAfterJobFinishes"] is True
        for pod in (head, worker, spec["submitterPodTemplate"]["spec"]):
            assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "rayjob" and labels["worldloom.io/job-id"] == job_id
        # the store's keys reach the head as Secret references; no credential is in the object
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in head["containers"][0]["env"] if "valueFrom" in e}
        assert refs == {"WORLDLOOM_JOB_STORE__ACCESS_KEY": {"name": "worldloom-s3", "key": "access_key"},
                        "WORLDLOOM_JOB_STORE__SECRET_KEY": {"name": "worldloom-s3", "key": "secret_key"}}
        assert r.secret_value("worldloom-s3", "secret_key") not in json.dumps(obj)
        assert r.secret_value("worldloom-s3", "access_key") not in json.dumps(obj)

        # no status yet, then Initializing: the job's Ray cluster is coming up
        wait_for(lambda: state(client, job_id)["state"] == "queued", "queued")
        set_status(r, job_id, jobDeploymentStatus="Initializing")
        time.sleep(1)
        assert state(client, job_id)["state"] == "queued"
        set_status(r, job_id, jobDeploymentStatus="Running", jobStatus="RUNNING")
        wait_for(lambda: state(client, job_id)["state"] == "running", "running")

        # the head runs the entrypoint with its container's environment (the kubelet's part done here)
        head_env = {**{k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ},
                    **r.pod_env(head["containers"][0])}
        started = time.monotonic()
        run = subprocess.run([sys.executable, *argv[1:], "--in-process"], env=head_env, capture_output=True,
                             text=True, timeout=280)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        print(f"entrypoint trained the job in {time.monotonic() - started:.1f} s")
        assert store.exists(tokenizer_model_key(job_id))
        assert state(client, job_id)["state"] == "running"  # the model alone does not finish the job

        set_status(r, job_id, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
        done = wait_for(lambda: (s := state(client, job_id))["state"] in ("succeeded", "failed") and s, "finished")
        assert done["state"] == "succeeded", done
        assert done["model_uri"].endswith("tokenizer.safetensors") and done["percent"] == 100.0
        assert {"val_psnr", "val_ssim"} <= set(done["metrics"])


def test_a_failed_rayjob_fails_the_job_with_kuberays_reason(jobs, service):
    r, *_ = jobs
    with service() as client:
        job_id = client.post("/v1/tokenizers", json={**TRAIN, "use_gpu": False}).json()["tokenizer_id"]
        obj = wait_for(lambda: rayjob(r, job_id), "the RayJob")
        (group,) = obj["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        assert "nvidia.com/gpu" not in str(group) and group["template"]["spec"]["nodeSelector"] == {
            "worldloom.io/pool": "cpu"}
        set_status(r, job_id, jobDeploymentStatus="Failed", reason="DeadlineExceeded",
                   message="the RayJob has passed its activeDeadlineSeconds")
        done = wait_for(lambda: (s := state(client, job_id))["state"] in ("failed", "succeeded") and s, "failed")
        assert done["state"] == "failed" and "DeadlineExceeded" in done["error"], done


def test_cancel_deletes_the_rayjob(jobs, service):
    r, _, _, store = jobs
    with service() as client:
        job_id = client.post("/v1/tokenizers", json=TRAIN).json()["tokenizer_id"]
        wait_for(lambda: rayjob(r, job_id), "the RayJob")
        set_status(r, job_id, jobDeploymentStatus="Running", jobStatus="RUNNING")
        wait_for(lambda: state(client, job_id)["state"] == "running", "running")
        assert client.delete(f"/v1/tokenizers/{job_id}").status_code in (200, 202)
        wait_for(lambda: rayjob(r, job_id) is None, "the RayJob to be deleted", timeout=20)
        wait_for(lambda: state(client, job_id)["state"] == "cancelled", "cancelled")
        assert store.exists(cancel_key(tokenizer_prefix(job_id)))  # and the marker for workers still running


@pytest.mark.parametrize("who", ["developer", f"{FULLNAME}-ingest"])
def test_a_token_without_the_role_is_refused_and_nothing_is_created(jobs, service, tmp_path, who):
    """The developer user (no RBAC at all) and the ingest service's account (no Role)."""
    r, *_ = jobs
    token = r.cp.apiserver.tokens[who] if who == "developer" else r.cp.token(who, r.namespace)
    kubeconfig = r.cp.write_kubeconfig(tmp_path / "kc", token, namespace=r.namespace)
    with service(kubeconfig) as client:
        job_id = client.post("/v1/tokenizers", json=TRAIN).json()["tokenizer_id"]
        done = wait_for(lambda: (s := state(client, job_id))["state"] in ("failed", "succeeded") and s, "refused")
    assert done["state"] == "failed" and "403 Forbidden" in done["error"] and "cannot create resource" in done["error"]
    assert rayjob(r, job_id) is None


class TokenizeProcess(ManagedProcess):
    """The tokenize service as its pod runs it (`python -m worldloom.tokenize`, the chart's env), on loopback."""

    name = "tokenize"

    def __init__(self, env: dict[str, str], kubeconfig: Path) -> None:
        super().__init__(ready_timeout=120)
        self.port = free_port()
        self.env = {k: v for k, v in env.items() if not k.startswith(PREFIX + "BUS__")}
        self.env.update({PREFIX + "BUS__KIND": "inprocess", PREFIX + "HTTP__HOST": LOOPBACK,
                         PREFIX + "HTTP__PORT": str(self.port), PREFIX + "TRAINING__RAYJOB__KUBECONFIG": str(kubeconfig)})
        self.token = self.env[PREFIX + "HTTP__API_TOKENS"].split(",")[0]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "worldloom.tokenize"]

    def environment(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("WORLDLOOM_")}
        return {**base, **self.env, "HOME": str(self.workdir)}

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"http://{LOOPBACK}:{self.port}{path}", timeout=10,
                             headers={"Authorization": f"Bearer {self.token}"}, **kwargs)

    def is_ready(self) -> bool:
        return self.call("GET", "/healthz").status_code == 200

    def kill(self) -> None:
        os.killpg(self.pid, signal.SIGKILL)  # a crash or an eviction: no shutdown, no clean-up
        self.stop()


def test_a_restarted_service_reattaches_to_the_running_rayjob(jobs):
    r, env, kubeconfig, _ = jobs
    first = TokenizeProcess(env, kubeconfig).start()
    try:
        job_id = first.call("POST", "/v1/tokenizers", json=TRAIN).json()["tokenizer_id"]
        created = wait_for(lambda: rayjob(r, job_id), "the RayJob")
        set_status(r, job_id, jobDeploymentStatus="Running", jobStatus="RUNNING")
        wait_for(lambda: first.call("GET", f"/v1/tokenizers/{job_id}").json()["state"] == "running", "running")
    finally:
        first.kill()
    second = TokenizeProcess(env, kubeconfig).start()
    try:
        wait_for(lambda: "attached to the existing RayJob" in second.stdout_path.read_text(), "re-attaching")
        (only,) = [j for j in r.get("rayjob.ray.io")["items"] if j["metadata"]["labels"]["worldloom.io/job-id"] == job_id]
        assert only["metadata"]["uid"] == created["metadata"]["uid"]  # the same object, not a second run
        set_status(r, job_id, jobDeploymentStatus="Complete", jobStatus="STOPPED", message="stopped by an operator")
        wait_for(lambda: second.call("GET", f"/v1/tokenizers/{job_id}").json()["state"] == "cancelled", "cancelled")
    finally:
        second.stop()
