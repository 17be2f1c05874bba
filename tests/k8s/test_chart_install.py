"""The chart installed into a real kube-apiserver v1.35 with the operators' CRDs: what an operator's
`helm install` meets beyond the offline schemas -- admission, the CRDs' structural schemas, CEL rules
and defaulting, RBAC, server-side apply.

Proves: every values profile installs; the server keeps every field the chart renders (nothing pruned
by a structural schema, nothing rejected); the NetworkPolicies, PodDisruptionBudgets, HPAs and KEDA
ScaledObjects are admitted as rendered; a bad value that passes the values schema and kubeconform is
refused by the server with the server's own message (a CEL rule, an API validation), both by
`helm upgrade` and by `--dry-run=server`; `helm uninstall` leaves only the Secrets the chart keeps
on purpose. Does not prove: that any pod starts or becomes ready (no scheduler, kubelet or
controllers), that the operators reconcile their objects, or that a CNI enforces the policies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from worldloom.testkit.chart import PROFILES, RELEASE, kinds, kubeconform_run, resource_name
from worldloom.testkit.crds import crd_files

pytestmark = pytest.mark.integration

FULLNAME = f"{RELEASE}-worldloom"
#: kinds that are not helm's to leave behind: the server makes them, or they are not namespaced objects
_NOT_RELEASE = {"events", "events.events.k8s.io"}


def _kept(doc: dict) -> bool:
    return (doc["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"


def contains(actual, expected, path: str = "") -> list[str]:
    """Where ``actual`` (as the server keeps it) lacks or changed something ``expected`` (as rendered)
    has: missing keys, other values, other list lengths. Defaults the server adds are fine; an empty
    rendered map or list may be dropped."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: {actual!r} is not a map"]
        out = []
        for key, value in expected.items():
            if key not in actual:
                if value not in ({}, [], None):
                    out.append(f"{path}.{key}: missing")
                continue
            out += contains(actual[key], value, f"{path}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: {actual!r} != {expected!r}"]
        return [d for i, (a, e) in enumerate(zip(actual, expected, strict=True)) for d in contains(a, e, f"{path}[{i}]")]
    if actual != expected and str(actual) != str(expected):
        return [f"{path}: {actual!r} != {expected!r}"]
    return []


def test_the_crds_are_the_operator_releases_the_offline_schemas_were_made_from(tmp_path: Path, k8s_schemas: Path):
    """Each installed CRD, converted by the shared tool that made ../shared/k8s-schemas, gives that
    schema byte for byte (sha256 in SOURCES.tsv) -- so the server and kubeconform check the same
    thing. KubeRay is the exception: the Go module proxy refuses ray-operator v1.7.0, v1.6.1 is used."""
    sources = {row.split("\t")[0]: row.split("\t")[7] for row in (k8s_schemas / "SOURCES.tsv").read_text().splitlines()[1:]}
    tool = k8s_schemas / "tools" / "crd2jsonschema.py"
    files = crd_files()
    ray = [f for f in files if f.name.startswith("ray.io_")]
    for group, extra in ((ray, ["--only-versions", "v1"]), ([f for f in files if f not in ray], [])):
        subprocess.run([sys.executable, str(tool), str(tmp_path), *extra, *map(str, group)], check=True,
                       capture_output=True, timeout=300)
    made = {str(p.relative_to(tmp_path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*.json")}
    same = {name for name, digest in made.items() if sources.get(name) == digest}
    assert same == set(made) - {"ray.io/raycluster_v1.json", "ray.io/rayjob_v1.json"}, sorted(made.items())
    assert len(same) == 8  # KServe 1, Strimzi 3, prometheus-operator 3, KEDA 1


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_each_profile_installs_as_rendered_and_uninstalls_clean(release, profile):
    r = release(profile)
    result = r.install()
    assert "STATUS: deployed" in result.stdout, result.stdout
    docs = r.applied()
    assert len(docs) == len(r.rendered()) > 10
    problems = {}
    for doc in docs:
        kept = r.get(resource_name(doc), doc["metadata"]["name"])
        diff = contains(kept, doc)
        if diff:
            problems[f"{doc['kind']}/{doc['metadata']['name']}"] = diff
    assert not problems, problems
    # the kinds the offline schemas cannot fully judge were admitted as rendered, one for one
    for kind in ("NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject", "Role",
                 "RoleBinding"):
        rendered = {d["metadata"]["name"] for d in kinds(docs, kind)}
        if rendered:
            on_server = r.get(resource_name(kinds(docs, kind)[0]))
            assert {i["metadata"]["name"] for i in on_server["items"]} == rendered, kind

    r.helm("uninstall", "--wait")
    listable = r.cp.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    left = r.get(",".join(n for n in listable if n not in _NOT_RELEASE))["items"]
    kept = {d["metadata"]["name"] for d in docs if _kept(d)}
    assert {(i["kind"], i["metadata"]["name"]) for i in left} == {("Secret", name) for name in kept}


@pytest.mark.parametrize(("profile", "bad", "kind", "name", "field", "message"), [
    # a KEDA CEL rule (x-kubernetes-validations): no JSON schema, so neither values.schema.json nor
    # kubeconform can compare two fields
    ("gpu", ["--set", "services.curate.autoscaling.minReplicas=9"], "scaledobject.keda.sh", f"{FULLNAME}-curate",
     "minReplicaCount", "minReplicaCount must be less than or equal to maxReplicaCount"),
    # the HorizontalPodAutoscaler's API validation
    ("cpu", ["--set", "services.search.autoscaling.minReplicas=5"], "horizontalpodautoscaler.autoscaling",
     f"{FULLNAME}-search", "minReplicas", "must be greater than or equal to `minReplicas`"),
])
def test_a_bad_upgrade_is_refused_with_the_servers_message(release, kubeconform, k8s_schemas, profile, bad, kind,
                                                          name, field, message):
    r = release(profile)
    r.install()
    before = r.get(kind, name)["spec"]
    offline = kubeconform_run(kubeconform, k8s_schemas, r.template(*bad))
    assert offline.returncode == 0, offline.stdout  # the offline check lets it through
    result = r.helm("upgrade", *bad, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert r.get(kind, name)["spec"][field] == before[field]  # nothing of the bad revision was applied
    assert "failed" in r.helm("history", "-o", "yaml").stdout


def test_dry_run_server_helm_looks_up_kubectl_admits(release):
    """`helm install --dry-run=server` renders against the cluster (its `lookup`s read the server: a kept
    Secret is reused) but does not submit the objects, so an invalid one passes it; `kubectl apply
    --server-side --dry-run=server` of the same manifests runs admission and is refused. Neither stores
    anything. (docs/operations.md tells operators to check a values change with the second.)"""
    r = release("cpu")
    r.install()
    token = r.secret_value(f"{FULLNAME}-api-tokens", "tokens")
    dry = r.helm("upgrade", "--dry-run=server").stdout
    (secret,) = [d for d in yaml.safe_load_all(dry.split("MANIFEST:", 1)[1].split("NOTES:", 1)[0])
                 if d and d["kind"] == "Secret" and d["metadata"]["name"] == f"{FULLNAME}-api-tokens"]
    assert base64.b64decode(secret["data"]["tokens"]).decode() == token  # read from the server

    bad = ("--set", "global.priorityClassName=Worldloom_Services")
    assert r.helm("upgrade", "--dry-run=server", *bad).returncode == 0  # not admitted, so not refused
    admitted = r.cp.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=helm", "--force-conflicts",
                            "-n", r.namespace, "-f", "-", input=r.template(*bad), check=False)
    assert admitted.returncode != 0 and "RFC 1123" in admitted.stderr, admitted.stderr
    deployments = r.get("deployments.apps")["items"]
    assert deployments and all("priorityClassName" not in d["spec"]["template"]["spec"] for d in deployments)
    assert r.helm("history", "-o", "json").stdout.count('"revision"') == 1  # no revision was recorded


def test_helm_applies_server_side_and_owns_the_fields_it_renders(release):
    """Helm 4 installs with server-side apply (managedFields say "Apply" for helm), so another field
    manager that sets one of the chart's fields to another value gets a conflict, not a silent win."""
    r = release("cpu")
    r.install()
    (deployment,) = [d for d in r.rendered() if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-search")]
    shown = r.cp.kubectl("get", "deployment.apps", deployment["metadata"]["name"], "-n", r.namespace, "-o", "json",
                         "--show-managed-fields").stdout
    managed = json.loads(shown)["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managed] == [("helm", "Apply")], managed
    deployment["spec"]["revisionHistoryLimit"] = 1
    result = r.cp.kubectl("apply", "--server-side", "--field-manager=someone-else", "-n", r.namespace, "-f", "-",
                          input=yaml.safe_dump(deployment), check=False)
    assert result.returncode != 0 and "conflict" in result.stderr.lower(), result.stderr
