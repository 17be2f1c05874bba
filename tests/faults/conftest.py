"""Fault-injection fixtures: a pipeline on servers of its own per scenario, the videos that flow through
it, and the table of every scenario's counts printed at the end of the run (``make test``'s output)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from worldloom.testkit.ledger import Tally
from worldloom.testkit.pipeline import Pipeline

#: seeds every scenario's fault points (logged in the table); set it to replay another run's points
SEED = int(os.environ.get("WORLDLOOM_FAULTS_SEED", "15"))

#: ten real videos, each a distinct recording (distinct content hashes): eight BridgeData V2 episodes
#: (3 fps robot footage), PySceneDetect's rotated clip (three shots) and the Sintel clip
VIDEOS = [
    *(f"bridge/videos/train/{e}/rgb.mp4" for e in (13109, 1432, 19139, 2277, 23977, 346, 4682, 5873)),
    "video/pyscenedetect/issue-134-rotate.mp4",
    "video/sintel/sintel_clip_10s.mp4",
]


@dataclass
class Row:
    """One scenario's line in the table; the test fills it in, the fixture files it (failing or not)."""

    scenario: str
    events_in: str = ""
    tally: Tally | None = None
    faults: list[str] = field(default_factory=list)
    seconds: float = 0.0
    outcome: str = "error"
    failure: str = ""


_ROWS: list[Row] = []


@pytest.fixture
def videos(shared_data: Path) -> list[Path]:
    return [shared_data / v for v in VIDEOS]


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(f"{SEED}:{request.node.name}")


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Iterator[Callable[..., Pipeline]]:
    """Pipeline(**kw) on fresh servers, its services' logs kept in the test's tmp_path; stopped at teardown."""
    made: list[Pipeline] = []

    def make(**kw: Any) -> Pipeline:
        p = Pipeline(bucket="faults", token="faults", logs=tmp_path / "logs", **kw)
        made.append(p)
        return p.start_servers()

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def pipeline(make_pipeline: Callable[..., Pipeline]) -> Pipeline:
    return make_pipeline()


@pytest.fixture
def row(request: pytest.FixtureRequest) -> Iterator[Row]:
    callspec = getattr(request.node, "callspec", None)  # a parametrized scenario is named by its id
    r = Row(callspec.id if callspec else request.node.name.removeprefix("test_"))
    yield r
    r.seconds = sum(getattr(request.node, "_durations", {}).values())  # servers' start-up and the scenario
    report = getattr(request.node, "_call_report", None)
    if report is not None:
        r.outcome = report.outcome
        if report.failed:
            r.failure = str(report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash")
                            else report.longrepr).splitlines()[0][:200]
    _ROWS.append(r)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    item._durations = {**getattr(item, "_durations", {}), report.when: report.duration}  # type: ignore[attr-defined]
    if report.when == "call":
        item._call_report = report  # type: ignore[attr-defined]


def _effects(t: Tally) -> str:
    names = {"clip records": "records", "shard entries": "shard", "milvus clips_visual": "visual",
             "milvus clips_text": "text", "clips.curated": "curated", "clips.tokenized": "tokenized",
             "dead letters": "dlq"}
    parts = [f"{names[c.effect]} {c.found}" for c in t.counts if c.effect in names and (c.found or c.expected)]
    return f"{t.get('clip records').expected} clips: " + " ".join(parts)


def pytest_terminal_summary(terminalreporter) -> None:
    if not _ROWS:
        return
    tr = terminalreporter
    tr.section(f"fault injection: nothing lost, nothing doubled (seed {SEED})")
    head = f"{'scenario':<36} {'events in':<20} {'effects out':<72} {'lost':>4} {'doubled':>7} {'s':>5}  result"
    tr.write_line(head)
    tr.write_line("-" * len(head))
    for r in _ROWS:
        t = r.tally
        effects = _effects(t) if t else "(not counted)"
        lost, doubled = (str(t.lost), str(t.doubled)) if t else ("-", "-")
        tr.write_line(f"{r.scenario:<36} {r.events_in:<20} {effects:<72} {lost:>4} {doubled:>7} {r.seconds:>5.0f}  {r.outcome}")
    for r in _ROWS:
        tr.write_line(f"{r.scenario}: faults: {'; '.join(r.faults) or '-'}")
        if notes := [f"{c.effect}: {c.note}" for c in (r.tally.counts if r.tally else []) if c.note]:
            tr.write_line(f"  {'; '.join(notes)}")
        if r.failure:
            tr.write_line(f"  failed: {r.failure}")
        if r.tally and (r.tally.lost or r.tally.doubled):
            for line in r.tally.report().splitlines():
                tr.write_line(f"  {line}")
