"""Shared fixtures: where the read-only real test videos live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


def shared_data_dir() -> Path:
    """``<repo>/../shared/data``, overridable with WORLDLOOM_SHARED_DATA."""
    override = os.environ.get("WORLDLOOM_SHARED_DATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not (root / "video").is_dir():
        pytest.skip(f"shared test data not found at {root} (set WORLDLOOM_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def testvideo(shared_data: Path) -> Path:
    return shared_data / "video" / "pyscenedetect" / "testvideo.mp4"
