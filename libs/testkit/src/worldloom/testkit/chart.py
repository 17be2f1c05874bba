"""The Helm chart, rendered and read: paths, values profiles and accessors over rendered manifests.

Used by tests/deploy (the fixtures there run the real helm and kubeconform from worldloom.testkit.k8s_tools).
"""

from __future__ import annotations

import os
from pathlib import Path

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
