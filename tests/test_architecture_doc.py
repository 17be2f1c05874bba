"""docs/architecture.md stays true: its object layout is the catalog's, and every file it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from worldloom.core.catalog import layout_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_the_object_layout_is_the_catalogs() -> None:
    text = DOC.read_text()
    block = text.split("<!-- layout:begin -->")[1].split("<!-- layout:end -->")[0].strip()
    assert block == layout_table(), "run `python -m worldloom.core.catalog` and paste its table into the doc"


def test_every_file_the_doc_names_exists() -> None:
    root = DOC.parents[1]
    named = set(re.findall(r"`((?:libs|services|proto|charts|docs)/[^`\s]+)`", DOC.read_text()))
    assert len(named) >= 8
    missing = sorted(p for p in named if not (root / p.rstrip("/")).exists())
    assert not missing, missing


def test_the_path_of_one_video_has_at_most_eight_files() -> None:
    section = DOC.read_text().split("## The path of one video")[1]
    steps = re.findall(r"^\d+\. `([^`]+)`", section, flags=re.M)
    assert 1 <= len(steps) <= 8 and len(set(steps)) == len(steps)
