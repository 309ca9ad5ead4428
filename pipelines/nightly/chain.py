"""`posters nightly`: embed → index → candidates for one date, resumable, idempotent and locked.

    posters nightly --config C --date YYYY-MM-DD --catalog URI --model URI --history URI --root URI [--allow-older]

Layout under `--root` (a local path or gs://):
    runs/<date>/embeddings/    this run's embeddings, incremental against the last finished run's
    runs/<date>/candidates/    item2item/, user/, _skipped/
    runs/<date>/stages/*.json  one marker per finished stage (`pipelines.nightly.run_state`)
    runs/<date>/summary.json   counts, timings, versions, overlap@k with the previous run (or why that report
                               failed: it never stops a finished night); `_SUCCESS` last
    index/                     the published index (version directories + `CURRENT`)
    nightly.lock               held while a run works (`pipelines.common.locks.acquire_lock`; create-only on GCS);
                               a local lock whose process is gone is taken over at once, any lock once it is
                               older than `nightly.lock_stale_after_s`

A finished date is left as it is; an interrupted one resumes at its first stage without a marker. A gate
failure (the embed error budget, the index recall gate) stops the run before `CURRENT` moves. A date earlier
than the one the live index was published for is refused before any work (an old night would take a newer
index off the air) unless `--allow-older`. A finished run ends by removing what killed runs left behind
(`pipelines.common.retention`), reported in its summary. Exit codes: 0 finished (or already finished), 1 a
stage failed or the date is older than the live index's, 2 bad arguments, 3 another run holds the lock.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from pipelines.common import locks, retention, storage, versions
from pipelines.common.command_line import command_parser, parse_command
from pipelines.config import Config, ConfigError
from pipelines.contracts import (
    EVALUATION_FILE,
    EVALUATION_REPORT_FILE,
    INDEX_MANIFEST_FILE,
    ITEM2ITEM_DIR,
    NIGHTLY_INDEX_DIR,
    NIGHTLY_LOCK_FILE,
    NIGHTLY_RUNS_DIR,
    NIGHTLY_SUMMARY_FILE,
)
from pipelines.embed.reader import describe_embeddings
from pipelines.nightly.overlap import overlap_report
from pipelines.nightly.run_state import RunState, last_finished_before

log = logging.getLogger(__name__)
STAGES = ("embed", "evaluate", "index", "candidates")
EXIT_STAGE_FAILED, EXIT_USAGE, EXIT_LOCKED = 1, 2, 3
DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")  # what `date.fromisoformat` also accepts: 20260102, 2026-W01-5


class UsageError(ValueError):
    """A flag the user must fix; one line."""


@dataclass
class NightlyRun:
    """One night's inputs and where its outputs go."""

    date: str
    root: str
    catalog: str
    model: str
    history: str
    config: Config
    config_argv: list[str]  # --config/--set, handed on to every stage
    beam_args: list[str] = field(default_factory=list)
    allow_older: bool = False  # publish even if the live index was published for a later date

    @property
    def runs_dir(self) -> str:
        return storage.join(self.root, NIGHTLY_RUNS_DIR)

    @property
    def run_dir(self) -> str:
        return storage.join(self.runs_dir, self.date)

    @property
    def index_root(self) -> str:
        return storage.join(self.root, NIGHTLY_INDEX_DIR)

    def output(self, name: str, date: Optional[str] = None) -> str:
        return storage.join(self.runs_dir, date or self.date, name)


# --- the stages: each returns what its marker records ------------------------------------------------------------
def embed_stage(run: NightlyRun, done: dict, previous_date: Optional[str]) -> dict:
    from pipelines.embed import pipeline as embed

    previous = ["--previous", run.output("embeddings", previous_date)] if previous_date else []
    stats = embed.run(run.config_argv + ["--catalog", run.catalog, "--model", run.model,
                                         "--out", run.output("embeddings")] + previous
                      + run.beam_args + run.config.nightly.embed_beam_args)
    counts = {key: stats.get(key) for key in ("read", "new", "changed", "unchanged", "removed", "rejected", "rows")}
    return {"out": run.output("embeddings"), "model_version": stats["model_version"], "counts": counts,
            "previous": previous[1] if previous else None}


def evaluate_stage(run: NightlyRun, done: dict, previous_date: Optional[str]) -> dict:
    """`posters evaluate` on tonight's embeddings (exact search), gated before anything is published: a failed
    gate stops the night here, so the index `CURRENT` and the candidates stay as they were."""
    from pipelines.evaluate import command as evaluate
    from pipelines.evaluate.gates import enforce_gates, headline_measures

    if not run.config.nightly.evaluate:
        return {"out": None, "skipped": "nightly.evaluate is false"}
    previous = (["--previous", storage.join(run.output("evaluation", previous_date), EVALUATION_FILE)]
                if previous_date else [])
    evaluation = evaluate.run(run.config_argv + ["--embeddings", done["embed"]["out"], "--catalog", run.catalog,
                                                 "--model", run.model, "--history", run.history,
                                                 "--out", run.output("evaluation")] + previous)
    enforce_gates(evaluation)
    return {"out": run.output("evaluation"), "report": storage.join(run.output("evaluation"), EVALUATION_REPORT_FILE),
            "headline": headline_measures(evaluation)}


def index_stage(run: NightlyRun, done: dict, previous_date: Optional[str]) -> dict:
    from pipelines.index import pipeline as index

    embeddings = done["embed"]["out"]
    manifest = _published_from(run.root, run.index_root, embeddings)
    adopted = manifest is not None  # published by this run before it was interrupted: not built twice
    if not adopted:
        manifest = index.build_and_publish(run.config, embeddings, run.index_root, run.beam_args, run_date=run.date,
                                           allow_older=run.allow_older)
    return {"version": manifest["version"], "version_dir": versions.version_uri(run.index_root, manifest["version"]),
            "model_version": manifest["model_version"], "count": manifest["count"],
            "recall_at_10": manifest["recall_at_10"], "adopted": adopted}


def candidates_stage(run: NightlyRun, done: dict, previous_date: Optional[str]) -> dict:
    from pipelines.candidates import pipeline as candidates

    summary = candidates.run(run.config_argv + ["--index", done["index"]["version_dir"],
                                                "--embeddings", done["embed"]["out"], "--history", run.history,
                                                "--out", run.output("candidates")] + run.beam_args)
    return {"out": run.output("candidates"), "titles": summary["titles"], "users": summary["users"],
            "skipped": summary["skipped"], "watches": summary["watches"]}


STAGE_FUNCTIONS: dict[str, Callable[[NightlyRun, dict, Optional[str]], dict]] = {
    "embed": embed_stage, "evaluate": evaluate_stage, "index": index_stage, "candidates": candidates_stage}


def _published_from(root: str, index_root: str, embeddings: str) -> Optional[dict]:
    """The live index manifest if it was built from exactly these embeddings' files, else None. The files are
    compared by their place under the nightly root, so a copied or moved root adopts the index its copy holds."""
    pointer = versions.read_current(index_root)
    if pointer is None:
        return None
    manifest = storage.read_json(storage.join(versions.version_uri(index_root, pointer.version), INDEX_MANIFEST_FILE))
    ours = [path[len(root) + 1:] if path.startswith(root + "/") else path
            for path in describe_embeddings(embeddings).files]
    built_from = manifest.get("embeddings_files") or []
    same = len(built_from) == len(ours) and all(
        path == mine or path.endswith("/" + mine) for path, mine in zip(built_from, ours))
    return manifest if same else None


# --- overlap with yesterday --------------------------------------------------------------------------------------
def item2item_files(candidates_uri: str) -> list[str]:
    if not storage.is_complete(candidates_uri):
        raise FileNotFoundError(storage.incomplete_message(candidates_uri) + " (posters candidates)")
    pattern = storage.join(candidates_uri, ITEM2ITEM_DIR, "*.parquet")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def compare_with_previous(run: NightlyRun, previous_date: Optional[str]) -> Optional[dict]:
    """overlap@k of today's item→item lists with the previous run's, for titles whose poster did not change,
    in bounded memory (`pipelines.nightly.overlap`: both nights split by title hash, one partition at a time)."""
    if previous_date is None:
        return None
    k = run.config.nightly.overlap_k
    today, before = describe_embeddings(run.output("embeddings")), describe_embeddings(
        run.output("embeddings", previous_date))
    report = overlap_report(today.files, before.files, item2item_files(run.output("candidates")),
                            item2item_files(run.output("candidates", previous_date)), k,
                            rows=max(today.rows, before.rows),
                            rows_per_partition=run.config.nightly.overlap_rows_per_partition)
    value = report["overlap_at_k"]
    alert = value is not None and value < run.config.nightly.overlap_alert_below
    if alert:
        log.warning("overlap@%d with %s is %.3f, below %.3f: today's neighbours differ sharply from yesterday's "
                    "for unchanged posters; check the model and the index", k, previous_date, value,
                    run.config.nightly.overlap_alert_below)
    return {"against": previous_date, "k": k, "titles_compared": report["titles_compared"],
            "overlap_at_k": None if value is None else round(value, 4), "alert": alert,
            "partitions": report["partitions"]}


def overlap_or_failure(run: NightlyRun, previous_date: Optional[str]) -> Optional[dict]:
    """`compare_with_previous`, or — when the report itself fails — a record of why: a report never stops a
    night whose outputs are published."""
    try:
        return compare_with_previous(run, previous_date)
    except Exception as err:  # noqa: BLE001 — the night's outputs are done; only the report is missing
        log.warning("nightly %s: the overlap report against %s failed: %s", run.date, previous_date, err)
        return {"against": previous_date, "k": run.config.nightly.overlap_k, "overlap_at_k": None, "alert": False,
                "error": f"{type(err).__name__}: {err}"}


# --- the chain ---------------------------------------------------------------------------------------------------
def clean_up(run: NightlyRun, own_lock: Optional[locks.Lock]) -> dict:
    """`posters gc` on the run's root once the night's outputs are published: what it removed. A failure here
    is logged and reported, never fatal (the night itself succeeded)."""
    try:
        return retention.collect_garbage(run.root, run.config.retention.older_than_hours,
                                         stale_after_s=run.config.nightly.lock_stale_after_s, own_lock=own_lock)
    except Exception as err:  # noqa: BLE001 — leftovers stay for the next night or `posters gc`
        log.warning("nightly %s: cleaning up %s failed: %s", run.date, run.root, err)
        return {"root": run.root, "error": f"{type(err).__name__}: {err}", "removed": []}


def run_stages(run: NightlyRun, state: RunState, lock: Optional[locks.Lock] = None) -> dict:
    """Runs every stage without a marker, in order, then cleans up the root (`clean_up`; `lock` is the run's
    own, which protects nothing from it); returns the summary (also written as JSON)."""
    started = time.time()
    previous_date = last_finished_before(run.runs_dir, run.date)
    done, stages = {}, {}
    for stage in STAGES:
        recorded = state.stage_result(stage)
        if recorded is not None:
            done[stage], stages[stage] = recorded, {**recorded, "ran": False}
            print(f"nightly {run.date}: {stage} finished earlier, skipped", flush=True)
            continue
        print(f"nightly {run.date}: {stage} …", flush=True)
        stage_started = time.time()
        result = STAGE_FUNCTIONS[stage](run, done, previous_date)
        result["seconds"] = round(time.time() - stage_started, 1)
        state.mark_stage_finished(stage, result)
        done[stage], stages[stage] = result, {**result, "ran": True}
        print(f"nightly {run.date}: {stage} done in {result['seconds']} s", flush=True)
    overlap = overlap_or_failure(run, previous_date)
    summary = {
        "date": run.date, "root": run.root, "run_dir": run.run_dir, "previous_run": previous_date,
        "versions": {"model": done["embed"]["model_version"], "index": done["index"]["version"]},
        "counts": {"embeddings": done["embed"]["counts"], "titles": done["candidates"]["titles"],
                   "users": done["candidates"]["users"], "skipped": done["candidates"]["skipped"]},
        # A stage that finished in an earlier attempt keeps the time it took then.
        "timings_s": {**{stage: stages[stage]["seconds"] for stage in STAGES},
                      "total": round(time.time() - started, 1)},
        "stages": stages,
        "overlap": overlap,
        "gc": clean_up(run, lock),
    }
    storage.write_json(storage.join(run.run_dir, NIGHTLY_SUMMARY_FILE), summary)
    state.mark_finished(summary)
    return summary


def run_nightly(run: NightlyRun) -> dict:
    """The chain under the root's lock; a finished date returns its recorded summary and changes nothing.
    Raises `locks.LockHeld` when another run holds the lock, and whatever a failing stage raised."""
    storage.check_output_location(run.root, {"--catalog": run.catalog, "--model": run.model,
                                             "--history": run.history,
                                             "catalog.poster_root": run.config.catalog.poster_root}, flag="--root")
    state = RunState(run.run_dir, run.root)
    if state.is_finished():
        return _already_finished(run, state)
    lock = locks.acquire_lock(storage.join(run.root, NIGHTLY_LOCK_FILE), owner=f"nightly {run.date}",
                              stale_after_s=run.config.nightly.lock_stale_after_s)
    try:
        if state.is_finished():  # finished by the run that held the lock while we waited for it
            return _already_finished(run, state)
        if not run.allow_older and state.stage_result("index") is None:  # refused before any work
            versions.check_run_date(run.index_root, versions.read_current(run.index_root), run.date)
        return run_stages(run, state, lock)
    finally:
        try:
            locks.release_lock(lock)
        except locks.LockLost as err:
            log.warning("%s: another run may have overlapped with this one", err)


def _already_finished(run: NightlyRun, state: RunState) -> dict:
    # Where the run is now (its root may have been copied or moved since it finished).
    return {**state.summary(), "root": run.root, "run_dir": run.run_dir, "already_finished": True}


def print_summary(summary: dict) -> None:
    if summary.get("already_finished"):
        print(f"nightly {summary['date']}: already finished, nothing to do ({summary['run_dir']})")
    ran = [stage for stage, info in summary["stages"].items() if info["ran"]]
    embeddings = summary["counts"]["embeddings"]
    overlap = summary["overlap"]
    print(f"nightly {summary['date']}: model {summary['versions']['model']}, index {summary['versions']['index']}; "
          f"stages run: {', '.join(ran) or 'none'}; timings (s): "
          + ", ".join(f"{k} {v}" for k, v in summary["timings_s"].items()))
    print(f"  embeddings: {embeddings.get('new')} new, {embeddings.get('changed')} changed, "
          f"{embeddings.get('unchanged')} unchanged, {embeddings.get('removed')} removed, "
          f"{embeddings.get('rejected')} rejected; candidates for {summary['counts']['titles']} titles and "
          f"{summary['counts']['users']} users")
    if overlap and overlap.get("error"):
        print(f"  overlap@{overlap['k']} with {overlap['against']}: the report failed ({overlap['error']}); "
              "the night's outputs are published")
    elif overlap:
        flag = "  ← ALERT: a sudden drop means something broke" if overlap["alert"] else ""
        print(f"  overlap@{overlap['k']} with {overlap['against']} on {overlap['titles_compared']} unchanged "
              f"posters: {overlap['overlap_at_k']}{flag}")
    cleanup = summary.get("gc")
    if cleanup and not summary.get("already_finished"):
        removed = ", ".join(f"{item['kind']} {item['uri']}" for item in cleanup["removed"]) or "nothing left over"
        print(f"  gc: {'failed: ' + cleanup['error'] if cleanup.get('error') else 'removed ' + removed}")
    print(f"  summary: {storage.join(summary['run_dir'], NIGHTLY_SUMMARY_FILE)}")


def _parse(argv: list[str]):
    parser = command_parser("nightly", "the nightly chain: embed → index → candidates for a date")
    parser.add_argument("--date", default=dt.datetime.now(dt.UTC).date().isoformat(),
                        help="the run's date, YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--catalog", required=True, help="catalog manifest (CSV, JSONL or Parquet)")
    parser.add_argument("--model", required=True, help="exported model directory")
    parser.add_argument("--history", required=True, help="watch history: *.csv, *.jsonl or *.parquet (or a glob)")
    parser.add_argument("--root", required=True, help="where runs/, index/ and the lock live")
    parser.add_argument("--allow-older", action="store_true",
                        help="publish this date's index even if the live one was published for a later date")
    args, config, beam_args = parse_command(parser, argv)
    check_date(args.date)
    config_argv = ["--config", args.config] + [arg for item in args.overrides for arg in ("--set", item)]
    return NightlyRun(date=args.date, root=args.root.rstrip("/"), catalog=args.catalog, model=args.model,
                      history=args.history, config=config, config_argv=config_argv, beam_args=beam_args,
                      allow_older=args.allow_older)


def check_date(date: str) -> None:
    """Accepts only YYYY-MM-DD (a real day): one spelling per day, so one run directory per day, and dates
    that sort as strings. Raises `UsageError`."""
    try:
        if not DATE_PATTERN.fullmatch(date):
            raise ValueError(date)
        dt.date.fromisoformat(date)
    except ValueError:
        raise UsageError(f"--date {date!r}: expected a date as YYYY-MM-DD, e.g. 2026-01-02") from None


def main(argv: list[str]) -> int:
    try:
        run = _parse(argv)
    except (UsageError, ConfigError) as err:
        print(f"posters nightly: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        summary = run_nightly(run)
    except storage.OutputLocationError as err:
        print(f"posters nightly: {err}", file=sys.stderr)
        return EXIT_USAGE
    except locks.LockHeld as err:
        print(f"posters nightly: {err}", file=sys.stderr)
        return EXIT_LOCKED
    except versions.OlderRunDate as err:
        print(f"posters nightly {run.date}: {err}", file=sys.stderr)
        return EXIT_STAGE_FAILED
    except Exception as err:  # noqa: BLE001 — any stage failure: report it, the rerun resumes there
        log.exception("nightly %s failed", run.date)
        print(f"posters nightly {run.date}: failed: {type(err).__name__}: {err}\n"
              f"finished stages are kept under {run.run_dir}; rerun the same command to resume", file=sys.stderr)
        return EXIT_STAGE_FAILED
    print_summary(summary)
    return 0
