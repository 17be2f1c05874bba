"""Fixtures for the tests against a real kube-apiserver (worldloom.testkit.kube): one control plane per
session with the operators' CRDs (worldloom.testkit.crds) and the priority classes of k8s/ installed.

What runs: etcd and kube-apiserver v1.35.4 only. No scheduler, kubelet, controller-manager or operator:
objects are admitted (authentication, RBAC, admission, CRD schemas and CEL rules, defaulting) and
stored, but no pod ever starts, no ReplicaSet appears, and nothing writes a RayJob's status but the
tests themselves, standing in for the KubeRay operator.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worldloom.testkit.chart import REPO, Release


@pytest.fixture(scope="session")
def control_plane() -> Iterator:
    from worldloom.testkit import crds, k8s_tools
    from worldloom.testkit.kube import ControlPlane

    try:
        plane = ControlPlane()
        files = crds.crd_files()
    except k8s_tools.ToolInstallError as exc:
        pytest.fail(str(exc))
    with plane as cp:
        cp.install_crds(files)
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "k8s" / "priorityclasses.yaml"))
        yield cp


@pytest.fixture
def release(control_plane):
    """release(profile, **kw) -> a Release in a fresh namespace (uninstalled at the end if still there)."""
    made: list[Release] = []

    def make(profile: str | None = None, **kwargs) -> Release:
        made.append(Release(control_plane, profile, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.helm("uninstall", check=False)
