"""Fixtures of the deployment tests (tests/deploy offline, tests/k8s on an API server): the real helm,
kubectl and kubeconform (installed once into .cache/tools by worldloom.testkit.k8s_tools) and the
offline Kubernetes schemas in ../shared/k8s-schemas."""

from __future__ import annotations

from pathlib import Path

import pytest

from worldloom.testkit.chart import schemas_dir


def _installed(tool: str) -> Path:
    from worldloom.testkit import k8s_tools

    try:
        return getattr(k8s_tools, f"ensure_{tool}")()
    except k8s_tools.ToolInstallError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def helm() -> Path:
    return _installed("helm")


@pytest.fixture(scope="session")
def kubeconform() -> Path:
    return _installed("kubeconform")


@pytest.fixture(scope="session")
def k8s_schemas() -> Path:
    found = schemas_dir()
    if found is None or not found.is_dir():
        pytest.fail("offline Kubernetes schemas not found in ../shared/k8s-schemas (set WORLDLOOM_K8S_SCHEMAS)")
    return found
