"""Curation runs: persisted status with per-stage counts, percent done and per-filter rejections
(the CurationRun record itself is in schemas.py).

A run's record lives in the object store (runs/<run_id>/run.json), so any replica can answer
GET /v1/curation-runs/{id} and a restarted service still knows finished runs.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from worldloom.core.catalog import run_key
from worldloom.core.store import ObjectNotFound, ObjectStore
from worldloom.curate.schemas import CurationRun, StageCount, VideoOutcome

class RunTracker:
    """Updates one run's record; progress within a video is folded into percent_done."""

    def __init__(self, store: ObjectStore, run: CurationRun) -> None:
        self.store = store
        self.run = run
        self._lock = threading.RLock()
        self._fractions: dict[int, float] = {}
        self._rejections: Counter[str] = Counter(run.rejections_by_filter)

    def save(self) -> None:
        with self._lock:
            self.store.put_record(run_key(self.run.run_id), self.run)

    def video(self, video_id: str) -> VideoOutcome:
        return next(v for v in self.run.videos if v.video_id == video_id)

    def progress(self, video_index: int, stages_done: int, stages_total: int) -> None:
        """Records one video's fraction done; videos may run in parallel, so fractions are summed."""
        with self._lock:
            self._fractions[video_index] = stages_done / max(1, stages_total)
            n = max(1, len(self.run.videos))
            self.run.percent_done = round(100.0 * sum(self._fractions.values()) / n, 1)
        self.save()

    def add_stage_counts(self, stats: dict[str, Any]) -> None:
        with self._lock:
            self._add_stage_counts(stats)

    def _add_stage_counts(self, stats: dict[str, Any]) -> None:
        for name, st in stats.items():
            cur = self.run.stage_counts.setdefault(name, StageCount())
            cur.clips_in += st.clips_in
            cur.clips_out += st.clips_out
            cur.seconds = round(cur.seconds + st.seconds, 3)

    def add_rejections(self, filters: list[str]) -> None:
        with self._lock:
            self._rejections.update(filters)
            self.run.rejections_by_filter = dict(self._rejections.most_common())

    def add_video(self, video_seconds: float, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self.run.video_seconds = round(self.run.video_seconds + video_seconds, 3)
            self.run._rows.extend(rows)


def load_run(store: ObjectStore, run_id: str) -> CurationRun | None:
    try:
        return store.get_record(run_key(run_id), CurationRun)
    except ObjectNotFound:
        return None
