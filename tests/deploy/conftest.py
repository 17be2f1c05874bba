"""Fixtures for the chart tests: the real helm and kubeconform (installed once into .cache/tools by
worldloom.testkit.k8s_tools) and the chart rendered with each values profile in charts/worldloom/ci."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest
import yaml

from worldloom.testkit.chart import CHART, RELEASE, profile_args, schemas_dir


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


@functools.cache
def _template(helm: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), "template", RELEASE, str(CHART), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def template(helm):
    """template(profile, *extra_args) -> CompletedProcess of `helm template` (cached per arguments)."""
    return lambda profile=None, *args: _template(helm, profile_args(profile) + tuple(args))


@pytest.fixture(scope="session")
def render(template):
    """render(profile, *extra_args) -> the rendered manifests as dicts; fails with helm's message."""

    def _render(profile: str | None = None, *args: str) -> list[dict]:
        result = template(profile, *args)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return _render
