"""Stage markers of one nightly run: what finished, with what result, so a rerun skips it.

A run directory (`<root>/runs/<date>/`) holds `stages/<stage>.json` for every stage that finished, written
only after the stage's outputs are complete, and `_SUCCESS` once the whole run finished (its summary inside).
A crash leaves the markers of the stages before it; the rerun starts at the first stage without one.

`jobs/<stage>.json` records the stage's Dataflow job (the launcher's job spec: name, id, where it writes), written
when the job is submitted and before anything waits on it, so a rerun finds the job it launched
(`dataflow_jobs.reusable_job`) instead of launching a duplicate.

Locations under the nightly root are stored relative to it (and listed under `RELATIVE_KEY`) and resolved
against the root the marker is read under, so a copied or moved root reads its own outputs, not the original's.
"""
from __future__ import annotations

from typing import Any, Optional

from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage
from pipelines.contracts import SUCCESS_FILE

STAGES_DIR = "stages"
JOBS_DIR = "jobs"
RELATIVE_KEY = "relative_to_root"  # the keys of a marker whose values are paths relative to the nightly root


def relative_to_root(result: dict[str, Any], root: str) -> dict[str, Any]:
    """`result` with every top-level location under `root` made relative to it (their keys listed)."""
    prefix = root.rstrip("/") + "/"
    relative = sorted(key for key, value in result.items() if isinstance(value, str) and value.startswith(prefix))
    if not relative:
        return dict(result)
    return {**result, **{key: result[key][len(prefix):] for key in relative}, RELATIVE_KEY: relative}


def resolved_against_root(marker: dict[str, Any], root: str) -> dict[str, Any]:
    """A marker written by `relative_to_root`, its relative locations joined to `root` (the one read under)."""
    result = {key: value for key, value in marker.items() if key != RELATIVE_KEY}
    for key in marker.get(RELATIVE_KEY, ()):
        result[key] = storage.join(root, result[key])
    return result


class RunState:
    """The markers under one run directory (a local path or gs:// URI); with `root`, locations under it are
    stored relative to it."""

    def __init__(self, run_dir: str, root: Optional[str] = None):
        self.run_dir = run_dir.rstrip("/")
        self.root = root.rstrip("/") if root else None

    def _marker(self, stage: str) -> str:
        return storage.join(self.run_dir, STAGES_DIR, f"{stage}.json")

    def stage_result(self, stage: str) -> Optional[dict[str, Any]]:
        """What `stage` recorded when it finished, or None when it has not finished."""
        marker = self._marker(stage)
        if not storage.exists(marker):
            return None
        found = storage.read_json(marker)
        return resolved_against_root(found, self.root) if self.root else found

    def mark_stage_finished(self, stage: str, result: dict[str, Any]) -> None:
        storage.write_json(self._marker(stage), relative_to_root(result, self.root) if self.root else result)

    def job_uri(self, stage: str) -> str:
        """Where `stage`'s job record lives (the launcher's `--job_spec_out` in the Composer DAG)."""
        return storage.join(self.run_dir, JOBS_DIR, f"{stage}.json")

    def recorded_job(self, stage: str) -> Optional[dict[str, Any]]:
        """`stage`'s job record (job_name, job_id, …), or None when no job was recorded."""
        uri = self.job_uri(stage)
        return storage.read_json(uri) if storage.exists(uri) else None

    def record_job(self, stage: str, record: dict[str, Any]) -> None:
        storage.write_json(self.job_uri(stage), record)

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
