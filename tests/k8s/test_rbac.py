"""RBAC of the chart's service accounts, asked of the real authorizer (`kubectl auth can-i` and a
SelfSubjectRulesReview, impersonating each account).

Proves: with the rayjob launcher, each job service's account may create, get, list, watch and delete
RayJobs and get their status in its own namespace -- exactly that and nothing else (its rules are the
unbound default plus those six) -- and nothing anywhere else; the other services' accounts get
nothing; with the local launcher no Role is rendered and no account may touch RayJobs.
"""

from __future__ import annotations

import json

import pytest

from worldloom.testkit.chart import RELEASE

pytestmark = pytest.mark.integration

FULLNAME = f"{RELEASE}-worldloom"
JOB_SERVICES = ("tokenize", "train", "posttrain")
OTHER_SERVICES = ("ingest", "curate", "search")
ALLOWED = [("create", "rayjobs.ray.io"), ("get", "rayjobs.ray.io"), ("list", "rayjobs.ray.io"),
           ("watch", "rayjobs.ray.io"), ("delete", "rayjobs.ray.io"), ("get", "rayjobs.ray.io", "status")]
DENIED = [("update", "rayjobs.ray.io"), ("patch", "rayjobs.ray.io"), ("deletecollection", "rayjobs.ray.io"),
          ("update", "rayjobs.ray.io", "status"), ("patch", "rayjobs.ray.io", "status"),
          ("create", "rayclusters.ray.io"), ("get", "secrets"), ("list", "pods"), ("create", "pods"),
          ("create", "deployments.apps"), ("create", "roles.rbac.authorization.k8s.io"),
          ("create", "rolebindings.rbac.authorization.k8s.io"), ("create", "serviceaccounts/token")]


def account(namespace: str, service: str) -> str:
    return f"system:serviceaccount:{namespace}:{FULLNAME}-{service}"


def can_i(cp, who: str, namespace: str | None, verb: str, resource: str, sub: str | None = None) -> bool:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    args = ["auth", "can-i", verb, resource, *scope, f"--as={who}"] + ([f"--subresource={sub}"] if sub else [])
    result = cp.kubectl(*args, check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
    return result.stdout.strip() == "yes"


def rules(cp, who: str, namespace: str) -> set[tuple]:
    """Every (apiGroup, resource, verb) the account may use in the namespace, from the authorizer."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": namespace}}
    out = json.loads(cp.kubectl("create", f"--as={who}", "--validate=false", "-o", "json", "-f", "-",
                                input=json.dumps(review)).stdout)
    return {(g, r, v) for rule in out["status"]["resourceRules"] for g in rule.get("apiGroups", [""])
            for r in rule["resources"] for v in rule["verbs"]}


def test_the_job_services_may_manage_rayjobs_in_their_namespace_and_nothing_else(release):
    r = release("rayjob")
    r.install()
    cp, ns = r.cp, r.namespace
    cp.kubectl("create", "serviceaccount", "nobody", "-n", ns)  # bound to nothing: the baseline
    baseline = rules(cp, f"system:serviceaccount:{ns}:nobody", ns)
    granted = {("ray.io", "rayjobs", v) for v in ("create", "get", "list", "watch", "delete")} | \
        {("ray.io", "rayjobs/status", "get")}
    for service in JOB_SERVICES:
        who = account(ns, service)
        for verb, resource, *sub in ALLOWED:
            assert can_i(cp, who, ns, verb, resource, *sub), (service, verb, resource, sub)
        for verb, resource, *sub in DENIED:
            assert not can_i(cp, who, ns, verb, resource, *sub), (service, verb, resource, sub)
        for verb, resource, *sub in ALLOWED:  # nowhere else, and nothing cluster-wide
            assert not can_i(cp, who, "default", verb, resource, *sub), (service, verb, "default")
            assert not can_i(cp, who, None, verb, resource, *sub), (service, verb, "all namespaces")
        assert rules(cp, who, ns) - baseline == granted, service
    for service in OTHER_SERVICES:
        assert rules(cp, account(ns, service), ns) == baseline, service


def test_with_the_local_launcher_no_account_may_touch_rayjobs(release):
    r = release("cpu")
    r.install()
    assert r.get("roles.rbac.authorization.k8s.io")["items"] == []
    assert r.get("rolebindings.rbac.authorization.k8s.io")["items"] == []
    for service in (*JOB_SERVICES, *OTHER_SERVICES):
        for verb, resource, *sub in ALLOWED:
            assert not can_i(r.cp, account(r.namespace, service), r.namespace, verb, resource, *sub), service
