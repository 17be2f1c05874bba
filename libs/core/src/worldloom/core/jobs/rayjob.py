"""Each training job as its own KubeRay ``RayJob``, through the ``kubernetes`` client.

A RayJob is a Ray cluster for one job's lifetime: the KubeRay operator creates the head and a worker
group sized to the job (worker count, one GPU per worker on the GPU pool), submits the entrypoint, and
tears the cluster down when it ends. So GPU workers scale with the jobs, not with a shared cluster.

* **create**: the object is named after the job id; the entrypoint is the service's driver with the
  job's loop and the object key of its frozen plan (the driver reads the plan and the store settings
  from the store and its environment: credentials come from the chart's Secret as ``secretKeyRef``,
  never in clear in the spec).
* **attach**: creating a RayJob that exists answers 409, and the launcher then watches that one: a
  restarted service re-attaches instead of starting a second run.
* **watch**: ``status.jobDeploymentStatus`` / ``status.jobStatus`` (as KubeRay writes them) map onto
  the job's state; a watch on the object with a periodic re-read, so a missed event costs at most
  ``poll_interval_s``.
* **cancel**: delete the RayJob (KubeRay's owner references take its Ray cluster with it).
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worldloom.core.jobs.launch import LaunchCancelled, StateCallback, WorkerSpec
from worldloom.core.jobs.progress import JobState
from worldloom.core.settings import RayJobSettings, StoreSettings

log = logging.getLogger("worldloom.core.jobs.rayjob")

GROUP, VERSION, PLURAL, KIND = "ray.io", "v1", "rayjobs", "RayJob"
#: the environment prefix the driver reads its store settings from (see worldloom.models.training.driver)
STORE_ENV_PREFIX = "WORLDLOOM_JOB_STORE__"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

#: KubeRay's ``jobDeploymentStatus`` values (ray-operator/apis/ray/v1/rayjob_types.go) before the end
_QUEUED = {"", "Initializing", "Waiting", "Suspending", "Suspended"}
_RUNNING = {"Running", "Retrying"}
_FAILED = {"Failed", "ValidationFailed"}


class RayJobError(RuntimeError):
    """The RayJob failed, or the API server refused an operation on it."""


def job_state(status: dict[str, Any] | None) -> tuple[JobState, str | None]:
    """KubeRay's RayJob status as the job's state and a detail for people.

    ``Complete`` means the Ray job reached a final ``jobStatus``: SUCCEEDED, STOPPED (``ray job stop``)
    or FAILED. ``Failed``/``ValidationFailed`` is the deployment failing (submission, deadline, spec).
    An unknown value counts as running (a newer operator) and is shown as the detail."""
    status = status or {}
    deployment, ray_status = status.get("jobDeploymentStatus") or "", status.get("jobStatus") or ""
    reason = ": ".join(x for x in (status.get("reason"), status.get("message")) if x) or None
    if deployment == "Complete":
        if ray_status == "SUCCEEDED":
            return "succeeded", None
        if ray_status == "STOPPED":
            return "cancelled", reason or "the Ray job was stopped"
        return "failed", reason or f"the Ray job ended {ray_status or 'without a status'}"
    if deployment in _FAILED:
        return "failed", reason or deployment
    if deployment in _QUEUED:
        return "queued", deployment or None
    if deployment in _RUNNING:
        return "running", ray_status or deployment
    return "running", f"jobDeploymentStatus {deployment!r}"


def _api_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    try:
        message = json.loads(body)["message"] if body else None
    except (ValueError, KeyError, TypeError):
        message = None
    return f"{getattr(exc, 'status', '')} {getattr(exc, 'reason', '')}: {message or body or exc}".strip()


class RayJobLauncher:
    """:class:`~worldloom.core.jobs.launch.Launcher` that runs each job as a RayJob.

    ``entrypoint`` is the command (in the service's image) that runs a job from its plan, e.g.
    ``["python", "-m", "worldloom.models.training.driver"]``; the launcher appends the job's arguments.
    ``api_client`` is a ``kubernetes.client.ApiClient`` (default: from ``settings.kubeconfig``, or the
    pod's service-account token)."""

    def __init__(self, settings: RayJobSettings, store: StoreSettings, entrypoint: Sequence[str], *,
                 api_client: Any = None) -> None:
        if store.kind != "s3":
            raise ValueError("the rayjob launcher needs an object store the Ray pods reach (store kind s3)")
        if not settings.image:
            raise ValueError("the rayjob launcher needs rayjob.image (the image with the job code)")
        has_keys = store.access_key is not None or store.secret_key is not None
        if has_keys and (settings.store_access_key is None or settings.store_secret_key is None):
            raise ValueError("the store has credentials: name the Secret keys that hold them "
                             "(rayjob.store_access_key / rayjob.store_secret_key); they never go into the spec")
        self.settings, self.store, self.entrypoint = settings, store, list(entrypoint)
        self.namespace = settings.namespace or (
            IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.is_file() else "")
        if not self.namespace:
            raise ValueError("rayjob.namespace is empty and this is not a pod (no service-account namespace)")
        self._api_client, self._api, self._lock = api_client, None, threading.Lock()

    # ------------------------------------------------------------------------------------- the object

    def name(self, job_id: str) -> str:
        return job_id  # job ids are <prefix>-<12 hex>: a valid object name, one RayJob per job

    def manifest(self, spec: WorkerSpec) -> dict[str, Any]:
        """The RayJob for ``spec``: a head (driver only, no training: num-cpus 0) and one worker group of
        ``spec.workers`` fixed replicas, each with one GPU on the GPU pool for a GPU job."""
        s = self.settings
        labels = {**s.labels, "worldloom.io/job-id": spec.job_id}
        args = ["--job-id", spec.job_id, "--loop", spec.loop, "--plan-key", spec.plan_key,
                "--workers", str(spec.workers)] + (["--gpu"] if spec.use_gpu else [])
        worker_resources = {side: dict(values) for side, values in s.worker_resources.items()}
        if spec.use_gpu:
            for side in ("requests", "limits"):
                worker_resources.setdefault(side, {})[s.gpu_resource] = "1"
        head_ports = [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                      {"name": "client", "containerPort": 10001}]
        head = self._pod(labels | {"worldloom.io/ray-node": "head"}, "ray-head", s.image, s.head_resources,
                         env=self._env(store=True), ports=head_ports)
        worker = self._pod(labels | {"worldloom.io/ray-node": "worker"}, "ray-worker",
                           (s.gpu_image or s.image) if spec.use_gpu else s.image, worker_resources,
                           env=self._env(store=False), gpu=spec.use_gpu)
        submitter = self._pod(labels | {"worldloom.io/ray-node": "submitter"}, "ray-job-submitter", s.image,
                              {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
                              env=self._env(store=False), volumes=False)
        job_spec: dict[str, Any] = {
            "entrypoint": shlex.join([*self.entrypoint, *args]),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
            "backoffLimit": 0,  # the job platform resumes from checkpoints; Ray Train retries the workers
            "submitterPodTemplate": submitter,
            "rayClusterSpec": {
                "headGroupSpec": {"rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                                  "template": head},
                "workerGroupSpecs": [{"groupName": "gpu" if spec.use_gpu else "cpu", "replicas": spec.workers,
                                      "minReplicas": spec.workers, "maxReplicas": spec.workers,
                                      "rayStartParams": {}, "template": worker}],
            },
        }
        if s.ray_version:
            job_spec["rayClusterSpec"]["rayVersion"] = s.ray_version
        if s.active_deadline_seconds:
            job_spec["activeDeadlineSeconds"] = s.active_deadline_seconds
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                "metadata": {"name": self.name(spec.job_id), "namespace": self.namespace, "labels": labels},
                "spec": job_spec}

    def _env(self, *, store: bool) -> list[dict[str, Any]]:
        env: list[dict[str, Any]] = [{"name": "HOME", "value": "/tmp"}, {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}]
        env += [{"name": k, "value": v} for k, v in sorted(self.settings.env.items())]
        if not store:
            return env
        st = self.store  # the driver (on the head) reads these; the workers get the store from the driver
        plain = {"KIND": st.kind, "ENDPOINT": st.endpoint, "BUCKET": st.bucket, "SECURE": str(st.secure).lower(),
                 "PART_SIZE": str(st.part_size)}
        if st.region:
            plain["REGION"] = st.region
        env += [{"name": STORE_ENV_PREFIX + k, "value": v} for k, v in plain.items()]
        for field, ref in (("ACCESS_KEY", self.settings.store_access_key), ("SECRET_KEY", self.settings.store_secret_key)):
            if ref is not None:
                env.append({"name": STORE_ENV_PREFIX + field,
                            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        return env

    def _pod(self, labels: dict[str, str], container: str, image: str, resources: dict[str, Any], *,
             env: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None, gpu: bool = False,
             volumes: bool = True) -> dict[str, Any]:
        s = self.settings
        c: dict[str, Any] = {"name": container, "image": image, "env": env, "resources": resources,
                             "securityContext": s.security_context}
        if ports:
            c["ports"] = ports
        spec: dict[str, Any] = {"automountServiceAccountToken": False, "securityContext": s.pod_security_context,
                                "containers": [c]}
        if container == "ray-job-submitter":
            spec["restartPolicy"] = "Never"
        if volumes:
            memory = (resources.get("limits") or {}).get("memory", "1Gi")
            c["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}]
            spec["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}},
                               {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": memory}}]
        if s.service_account:
            spec["serviceAccountName"] = s.service_account
        if s.image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
        selector = (s.gpu_node_selector or s.node_selector) if gpu else s.node_selector
        tolerations = [*s.gpu_tolerations, *s.tolerations] if gpu else list(s.tolerations)
        if selector:
            spec["nodeSelector"] = selector
        if tolerations:
            spec["tolerations"] = tolerations
        if gpu and s.gpu_runtime_class:
            spec["runtimeClassName"] = s.gpu_runtime_class
        return {"metadata": {"labels": labels}, "spec": spec}

    # ----------------------------------------------------------------------------------- API server

    def api(self) -> Any:
        with self._lock:
            if self._api is None:
                from kubernetes import client, config

                api_client = self._api_client
                if api_client is None:
                    if self.settings.kubeconfig is not None:
                        api_client = config.new_client_from_config(config_file=str(self.settings.kubeconfig))
                    else:
                        configuration = client.Configuration()
                        config.load_incluster_config(client_configuration=configuration)
                        api_client = client.ApiClient(configuration)
                self._api = client.CustomObjectsApi(api_client)
            return self._api

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's RayJob as the server has it, or None."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api().get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name(job_id))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RayJobError(f"reading RayJob {self.name(job_id)}: {_api_message(exc)}") from None

    def _create_or_attach(self, spec: WorkerSpec) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        name = self.name(spec.job_id)
        for _ in range(3):  # 409 then 404: it was deleted in between; create again
            try:
                created = self.api().create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                                     self.manifest(spec))
                log.info("created RayJob %s/%s (%d workers%s)", self.namespace, name, spec.workers,
                         ", GPU" if spec.use_gpu else "")
                return created
            except ApiException as exc:
                if exc.status != 409:
                    raise RayJobError(f"creating RayJob {self.namespace}/{name}: {_api_message(exc)}") from None
            existing = self.get(spec.job_id)
            if existing is not None:
                log.info("attached to the existing RayJob %s/%s", self.namespace, name)
                return existing
        raise RayJobError(f"RayJob {self.namespace}/{name} kept appearing and disappearing")

    def _next(self, job_id: str, resource_version: str) -> dict[str, Any] | None:
        """The object after its next change (or after ``poll_interval_s``); None once it is deleted."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        name = self.name(job_id)
        timeout = max(1, int(self.settings.poll_interval_s))
        w = watch.Watch()
        try:
            for event in w.stream(self.api().list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                                  field_selector=f"metadata.name={name}", resource_version=resource_version,
                                  timeout_seconds=timeout, _request_timeout=timeout + 10):
                if event["type"] == "DELETED":
                    return None
                if event["type"] in ("ADDED", "MODIFIED"):
                    return event["object"]
                break  # ERROR (e.g. 410 Gone: the version is too old): read the object again
        except ApiException as exc:
            if exc.status not in (410, 504):
                raise RayJobError(f"watching RayJob {self.namespace}/{name}: {_api_message(exc)}") from None
        except Exception:  # a dropped connection: read the object again below
            log.debug("watch on RayJob %s ended", name, exc_info=True)
        finally:
            w.stop()
        return self.get(job_id)

    def run(self, spec: WorkerSpec, on_state: StateCallback) -> None:
        name = self.name(spec.job_id)
        obj: dict[str, Any] | None = self._create_or_attach(spec)
        seen: tuple[str, str | None] | None = None
        while obj is not None:
            state, detail = job_state(obj.get("status"))
            if (state, detail) != seen:
                seen = (state, detail)
                log.info("RayJob %s/%s: %s%s", self.namespace, name, state, f" ({detail})" if detail else "")
            if state == "succeeded":
                return
            if state == "cancelled":
                raise LaunchCancelled(detail or "the Ray job was stopped")
            if state == "failed":
                raise RayJobError(f"RayJob {self.namespace}/{name} failed: {detail}")
            on_state(state, detail)
            obj = self._next(spec.job_id, obj["metadata"]["resourceVersion"])
        raise LaunchCancelled(f"RayJob {self.namespace}/{name} was deleted")

    def cancel(self, job_id: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api().delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name(job_id),
                                                       propagation_policy="Background")
            log.info("deleted RayJob %s/%s", self.namespace, self.name(job_id))
        except ApiException as exc:
            if exc.status != 404:
                raise RayJobError(f"deleting RayJob {self.namespace}/{self.name(job_id)}: {_api_message(exc)}") from None
