"""Stage markers of one nightly run: what finished, with what result, so a rerun skips it.

A run directory (`<root>/runs/<date>/`) holds `stages/<stage>.json` for every stage that finished, written
only after the stage's outputs are complete, and `_SUCCESS` once the whole run finished (its summary inside).
A crash leaves the markers of the stages before it; the rerun starts at the first stage without one.
"""
from __future__ import annotations

from typing import Any, Optional

from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage
from pipelines.contracts import SUCCESS_FILE

STAGES_DIR = "stages"


class RunState:
    """The markers under one run directory (a local path or gs:// URI)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir.rstrip("/")

    def _marker(self, stage: str) -> str:
        return storage.join(self.run_dir, STAGES_DIR, f"{stage}.json")

    def stage_result(self, stage: str) -> Optional[dict[str, Any]]:
        """What `stage` recorded when it finished, or None when it has not finished."""
        marker = self._marker(stage)
        return storage.read_json(marker) if storage.exists(marker) else None

    def mark_stage_finished(self, stage: str, result: dict[str, Any]) -> None:
        storage.write_json(self._marker(stage), result)

    def is_finished(self) -> bool:
        return storage.exists(storage.join(self.run_dir, SUCCESS_FILE))

    def mark_finished(self, summary: dict[str, Any]) -> None:
        storage.write_json(storage.join(self.run_dir, SUCCESS_FILE), summary)

    def summary(self) -> Optional[dict[str, Any]]:
        return storage.read_json(storage.join(self.run_dir, SUCCESS_FILE)) if self.is_finished() else None


def finished_run_dates(runs_dir: str) -> list[str]:
    """Dates (directory names) of the runs under `runs_dir` that finished, sorted."""
    matches = FileSystems.match([storage.join(runs_dir, "*", SUCCESS_FILE)])[0].metadata_list
    return sorted(path.rstrip("/").split("/")[-2] for path in (m.path for m in matches))


def last_finished_before(runs_dir: str, date: str) -> Optional[str]:
    """The latest finished run date strictly before `date` (ISO dates sort as strings), or None."""
    earlier = [d for d in finished_run_dates(runs_dir) if d < date]
    return earlier[-1] if earlier else None
