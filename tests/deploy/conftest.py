"""Fixtures for the chart tests: the chart rendered with each values profile in charts/worldloom/ci by the
real helm (tests/conftest.py has the tool fixtures)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest
import yaml

from worldloom.testkit.chart import CHART, RELEASE, profile_args


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
