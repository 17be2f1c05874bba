"""The Helm chart, rendered and read: paths, values profiles, accessors over rendered manifests, the
offline kubeconform check, and a release of the chart on a real API server (:class:`Release`).

Used by tests/deploy (offline: the real helm and kubeconform from worldloom.testkit.k8s_tools) and
tests/k8s (a control plane from worldloom.testkit.kube).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

from worldloom.testkit.kafka import repo_root

REPO = repo_root()
CHART = REPO / "charts" / "worldloom"
PROFILES = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE = "wl"


def schemas_dir() -> Path | None:
    """$WORLDLOOM_K8S_SCHEMAS, else the first shared/k8s-schemas beside the repo or above it
    (<repo>/../shared in a checkout; a git worktree may nest a level deeper)."""
    if env := os.environ.get("WORLDLOOM_K8S_SCHEMAS"):
        return Path(env)
    for parent in REPO.parents:
        if (candidate := parent / "shared" / "k8s-schemas" / "README.md").is_file():
            return candidate.parent
    return None


def profile_args(profile: str | None) -> tuple[str, ...]:
    return ("-f", str(CHART / "ci" / f"{profile}-values.yaml")) if profile else ()


def values(profile: str | None = None) -> dict:
    """values.yaml with a profile on top, merged the way helm merges maps (lists are replaced)."""

    def merge(base: dict, top: dict) -> dict:
        out = dict(base)
        for key, value in top.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    if profile:
        merged = merge(merged, yaml.safe_load((CHART / "ci" / f"{profile}-values.yaml").read_text()))
    return merged


def kinds(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def service_pods(docs: list[dict]) -> dict[str, dict]:
    """service name -> the pod spec of its workload (a Deployment, or an InferenceService predictor)."""
    pods = {}
    for d in docs:
        if d["kind"] == "Deployment":
            pods[component(d)] = d["spec"]["template"]["spec"]
        elif d["kind"] == "InferenceService":
            pods[component(d)] = d["spec"]["predictor"]
    return pods


def pod_templates(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(name, labels, pod spec) of every pod the release runs: workloads, Ray nodes and helm test pods."""
    out = []
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "StatefulSet"):
            out.append((name, d["spec"]["template"]["metadata"]["labels"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "InferenceService":
            out.append((name, d["spec"]["predictor"]["labels"], d["spec"]["predictor"]))
        elif d["kind"] == "RayCluster":
            head = d["spec"]["headGroupSpec"]["template"]
            out.append((f"{name}/head", head["metadata"]["labels"], head["spec"]))
            for group in d["spec"].get("workerGroupSpecs", []):
                t = group["template"]
                out.append((f"{name}/{group['groupName']}", t["metadata"]["labels"], t["spec"]))
        elif d["kind"] == "Pod":
            out.append((name, d["metadata"]["labels"], d["spec"]))
    return out


def code_dependencies(service: str) -> set[str]:
    """What a service's code talks to, read from its sources: the bus (make_bus), the object store
    (make_store), the vector index (VectorIndex) and Ray (it launches training jobs: job_launcher)."""
    source = "\n".join(p.read_text() for p in (REPO / "services" / service / "src").rglob("*.py"))
    return {dep for dep, marker in (("bus", "make_bus("), ("store", "make_store("), ("vectors", "VectorIndex"),
                                    ("ray", "job_launcher(")) if marker in source}


def kubeconform_run(kubeconform: Path, schemas: Path, manifests: str) -> subprocess.CompletedProcess[str]:
    """kubeconform -strict against the offline Kubernetes 1.35 and CRD schemas (../shared/k8s-schemas)."""
    return subprocess.run(
        [str(kubeconform), "-strict", "-summary", "-kubernetes-version", "1.35.0",
         "-schema-location", str(schemas),
         "-schema-location", f"{schemas}/{{{{.Group}}}}/{{{{.ResourceKind}}}}_{{{{.ResourceAPIVersion}}}}.json", "-"],
        input=manifests, capture_output=True, text=True, timeout=300)


def resource_name(doc: dict) -> str:
    """kubectl's name for the doc's kind: ``deployment.apps``, ``scaledobject.keda.sh``, ``service``."""
    group = doc["apiVersion"].rpartition("/")[0]
    return doc["kind"].lower() + (f".{group}" if group else "")


class Release:
    """The chart installed as ``name`` in its own namespace on a :class:`~worldloom.testkit.kube.ControlPlane`:
    helm verbs, the manifests helm applies, objects as the server keeps them, and a pod's environment."""

    def __init__(self, cp: Any, profile: str | None, *, name: str = RELEASE, namespace: str | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.cp, self.profile, self.name, self.args = cp, profile, name, tuple(args)
        self.namespace = namespace or f"t-{profile or 'default'}-{uuid.uuid4().hex[:6]}"

    def helm(self, verb: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        chart = () if verb in ("uninstall", "history", "status") else (str(CHART), *profile_args(self.profile),
                                                                        *self.args)
        return self.cp.helm(verb, self.name, *chart, "-n", self.namespace, *args, check=check)

    def install(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.helm("install", "--create-namespace", *args)

    def template(self, *args: str) -> str:
        return self.cp.helm("template", self.name, str(CHART), *profile_args(self.profile), *self.args,
                            "-n", self.namespace, *args).stdout

    def rendered(self, *args: str) -> list[dict]:
        """What helm would apply for this release (hooks left out: they run on `helm test`)."""
        return _manifests(self.template(*args))

    def applied(self) -> list[dict]:
        """What helm applied for the release's current revision (`helm get manifest`)."""
        return _manifests(self.cp.helm("get", "manifest", self.name, "-n", self.namespace).stdout)

    def get(self, kind: str, name: str | None = None, *, check: bool = True) -> dict | None:
        result = self.cp.kubectl("get", kind, *([name] if name else []), "-n", self.namespace, "-o", "json",
                                 check=check)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def secret_value(self, name: str, key: str) -> str:
        secret = self.get("secret", name)
        assert secret is not None
        return base64.b64decode(secret["data"][key]).decode()

    def pod_env(self, container: dict) -> dict[str, str]:
        """The container's environment as a kubelet would set it: values, and Secret keys read from
        the server (no kubelet runs here, so the tests do its part)."""
        env = {}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            elif ref := var.get("valueFrom", {}).get("secretKeyRef"):
                env[var["name"]] = self.secret_value(ref["name"], ref["key"])
        return env


def _manifests(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d and "helm.sh/hook" not in (d["metadata"].get("annotations") or {})]


def deployment_container(docs: list[dict], service: str) -> dict:
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and component(d) == service]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return container
