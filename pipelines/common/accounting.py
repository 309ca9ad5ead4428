"""A catalog run's counts: stat pairs summed by Beam → `_stats.json`, the accounting identity and the error budget.

preprocess and embed count what they read, accept and reject as stat pairs `((section, name), n)` — `name` ''
for a top-level integer such as `read`, else a key inside the `section` dict, such as a reject reason under
`rejected_by_reason`. `CountStats` sums them into a JSON file in staging; the launcher adds `budget_figures`,
checks the identity (every catalog row accepted or rejected) with `check_accounting`, and refuses to publish a run
over its error budget with `write_stats_and_check_budget`.

The identity holds for the manifest's physical lines too: `lines` counts them (`total`) and says where each went —
the `header`, a `blank` line, or the rows `accepted` and `rejected` (a row counts every line it spans, and a line
that does not parse is a rejected row of its own): total = header + blank + accepted + rejected.
"""
from __future__ import annotations

import copy
import json

import apache_beam as beam

from pipelines.common import storage
from pipelines.contracts import STATS_FILE, RejectReason

COUNTS_FILE = ".counts.json"  # CountStats' output in staging, read back by the launcher and deleted


class ErrorBudgetExceeded(RuntimeError):
    """More catalog rows were rejected than `<pipeline>.max_reject_fraction` allows; nothing was published."""


LINE_KEYS = ("total", "header", "blank", "accepted", "rejected")


def reject_stats(reject: dict):
    """A reject record → its stat pairs: one `rejected`, one under its reason in `rejected_by_reason`, its manifest
    lines under `lines`."""
    yield ("rejected", ""), 1
    yield ("rejected_by_reason", reject["reason"]), 1
    yield ("lines", "rejected"), reject.get("lines", 1)


def manifest_line_stats(lines):
    """A `catalog.ManifestLines` → its stat pairs under `lines` (total, header, blank)."""
    yield ("lines", "total"), lines.total
    yield ("lines", "header"), lines.header
    yield ("lines", "blank"), lines.blank


def stats_from_counts(counts: list[tuple[tuple[str, str], int]], sections: dict) -> dict:
    """Summed stat pairs → the counts: `read`, `rejected`, `rejected_by_reason` and the pipeline's own `sections`
    (their empty values: 0 or {}), so a count nothing contributed to is still there."""
    stats = {"read": 0, "rejected": 0, "rejected_by_reason": {}, "lines": dict.fromkeys(LINE_KEYS, 0),
             **copy.deepcopy(sections)}
    for (section, name), n in counts:
        if name:
            stats.setdefault(section, {})[name] = n
        else:
            stats[section] = n
    return stats


class CountStats(beam.PTransform):
    """Stat pairs → one JSON document of `stats_from_counts(…, sections)` written to `uri`.

    The document is the one element of a global combine, so it is written by `storage.write_bytes` (atomic: a
    reader sees all of it or nothing) in one step, not by a file sink: a sink's dozen transforms (initialise,
    write bundles, group, pre-finalise, finalise) would be built, and run as stages, in every run of every stage
    for one small file.
    """

    def __init__(self, uri: str, sections: dict):
        super().__init__()
        self._uri = uri
        self._sections = sections

    def expand(self, pairs):
        sections = self._sections
        return (pairs
                | "Sum" >> beam.CombinePerKey(sum)
                | "Gather" >> beam.combiners.ToList()
                | "ToJson" >> beam.Map(lambda counts: json.dumps(stats_from_counts(counts, sections), sort_keys=True))
                | "Write" >> beam.Map(_write_text, self._uri))


def _write_text(text: str, uri: str) -> None:
    storage.write_bytes(uri, text.encode("utf-8"))


def budget_figures(stats: dict, duplicate_title_policy: str, max_reject_fraction: float) -> dict:
    """The counts and the settings → what the error budget is judged on, for `_stats.json`:
    `duplicate_titles_kept_last` (rows superseded under `keep_last`: rejects for the accounting, not errors),
    `reject_fraction` and `max_reject_fraction`."""
    superseded = (stats["rejected_by_reason"].get(RejectReason.DUPLICATE_TITLE_ID, 0)
                  if duplicate_title_policy == "keep_last" else 0)
    return {"duplicate_titles_kept_last": superseded, "max_reject_fraction": max_reject_fraction,
            "reject_fraction": round(stats["rejected"] / stats["read"], 6) if stats["read"] else 0.0}


def check_accounting(stats: dict, accepted: tuple[str, ...]) -> None:
    """Raises `RuntimeError` unless the `accepted` counts plus `rejected` add up to `read`, and the manifest's lines
    add up (`lines`): the promise that every catalog row, and every line of the manifest, is either in the output,
    in rejects/, or a header or blank line."""
    terms = (*accepted, "rejected")
    if sum(stats[key] for key in terms) != stats["read"]:
        raise RuntimeError("accounting broken: " + " + ".join(f"{key} {stats[key]}" for key in terms)
                           + f" != read {stats['read']}")
    lines = stats.get("lines")
    if lines is not None and sum(lines[key] for key in LINE_KEYS[1:]) != lines["total"]:
        raise RuntimeError("accounting broken: manifest lines " + " + ".join(f"{key} {lines[key]}" for key in
                                                                             LINE_KEYS[1:])
                           + f" != total {lines['total']}")


def top_reasons(stats: dict, n: int | None = None) -> str:
    """'reason count, …' for the `n` (default all) most common reject reasons, most common first."""
    ranked = sorted(stats["rejected_by_reason"].items(), key=lambda item: (-item[1], item[0]))[:n]
    return ", ".join(f"{reason} {count}" for reason, count in ranked)


def check_error_budget(stats: dict, setting: str, unit: str = "rows") -> None:
    """Stats with `budget_figures` → `ErrorBudgetExceeded` naming the top three reasons when the rejects, less
    `duplicate_titles_kept_last`, are more than `max_reject_fraction` of `read`; `setting` names the config key
    to change and `unit` what was read ("rows", "titles")."""
    if stats["read"] == 0:
        raise ErrorBudgetExceeded("the catalog has no rows")
    errors = stats["rejected"] - stats["duplicate_titles_kept_last"]
    fraction, budget = errors / stats["read"], stats["max_reject_fraction"]
    if fraction > budget:
        raise ErrorBudgetExceeded(
            f"{errors} of {stats['read']} {unit} rejected ({fraction:.1%}), more than {setting}={budget:.1%}; "
            f"top reasons: {top_reasons(stats, 3)}")


def write_stats_and_check_budget(stats: dict, staging: str, out: str, setting: str, unit: str = "rows") -> None:
    """Writes `_stats.json` into `staging`, then raises `ErrorBudgetExceeded` for a run over its budget, saying that
    nothing went to `out` and that the rejects and stats stay in `staging`. On return the caller publishes."""
    storage.write_json(storage.join(staging, STATS_FILE), stats)
    try:
        check_error_budget(stats, setting, unit)
    except ErrorBudgetExceeded as err:
        raise ErrorBudgetExceeded(f"{err}. Nothing was published to {out}; this run's rejects and stats "
                                  f"are in {staging}") from None
