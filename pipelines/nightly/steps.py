"""The steps between a scheduler's Dataflow jobs: what the Composer DAG (pipelines/composer/nightly_dag.py) runs in a
pod after each job, and the overlap report at the end.

    posters embed publish      --root R --date D [--job-spec URI] [--job-id ID] [--owner O] [--config C]
    posters nightly evaluate   --root R --date D --catalog URI --model URI --history URI [--config C]
    posters index publish      --root R --date D [--job-spec URI] [--job-id ID] [--owner O] [--allow-older]
    posters candidates publish --root R --date D [--job-spec URI] [--job-id ID] [--owner O]
    posters nightly report     --root R --date D [--config C]

`--root` is the nightly root (`runs/`, `index/`, `nightly.lock`), as for `posters nightly`. A publish step:
1. reads the job record the stage's launcher wrote (`--job-spec`, default `runs/<date>/jobs/<stage>.json`), adds
   `--job-id` (the id the DAG's task got from Dataflow) and records it in the run state before anything waits;
2. on Dataflow, waits for that job to end (`jobs.get`; a record without an id finds the job by name with
   `jobs.list`); the DAG's task has already waited, so this normally returns at once; a failed job publishes
   nothing;
3. takes the nightly lock as `--owner`, renewed by a heartbeat while the step works;
4. checks the job's output (embed: accounting and error budget; index: the recall gate; candidates: the files)
   and publishes it; the index's `CURRENT` swap is fenced by the lock's token (`locks.Heartbeat.fenced`), and the
   other outputs, each in the run's own `runs/<date>/` directory, are published only after the fence is checked;
5. writes the stage's marker (`runs/<date>/stages/<stage>.json`, with its job), the same marker `posters nightly`
   writes, so a retry of a finished step does nothing.
`posters nightly report` computes overlap@k with the last finished run and finishes the run (`summary.json`,
`_SUCCESS`), as the end of `posters nightly` does. Exit codes as `posters nightly`: 0 done (or done before),
1 a check or the job failed, 2 bad arguments, 3 another run holds the lock.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Optional

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common import dataflow_jobs, locks, storage, versions
from pipelines.common.command_line import command_parser, parse_command
from pipelines.config import Config, ConfigError
from pipelines.contracts import (
    CANDIDATES_SUMMARY_FILE,
    ITEM2ITEM_DIR,
    NIGHTLY_LOCK_FILE,
    NIGHTLY_RUNS_DIR,
    NIGHTLY_SUMMARY_FILE,
    SKIPPED_DIR,
    SUCCESS_FILE,
    USER_CANDIDATES_DIR,
)
from pipelines.nightly import chain
from pipelines.nightly.run_state import RunState, last_finished_before

log = logging.getLogger(__name__)
POLL_S = 30.0  # between jobs.get calls while a Dataflow job is still running
JOB_WAIT_S = 6 * 3600.0  # a job still running after this fails the step (the DAG's task retries it)


@dataclass
class Step:
    """One step's flags: which stage, which night, where."""

    stage: str
    root: str
    date: str
    config: Config
    owner: str
    job_spec: Optional[str] = None
    job_id: Optional[str] = None

    @property
    def state(self) -> RunState:
        return RunState(storage.join(self.root, NIGHTLY_RUNS_DIR, self.date), self.root)


# --- 1–2: the job ------------------------------------------------------------------------------------------------
def finished_job(step: Step) -> dict:
    """The stage's job record with its id, recorded in the run state before waiting; on Dataflow, once the job is
    done (`dataflow_jobs.JobFailed` for a job that failed or was cancelled)."""
    uri = step.job_spec or step.state.job_uri(step.stage)
    if not storage.exists(uri):
        raise FileNotFoundError(f"no job record at {uri}: the {step.stage} launch did not run for {step.date}")
    record = storage.read_json(uri)
    record["job_id"] = step.job_id or record.get("job_id")
    step.state.record_job(step.stage, record)
    if record.get("runner") != "DataflowRunner":
        return record  # DirectRunner: the launcher's run() ran the job to its end
    project = record.get("project") or step.config.beam.get("project")
    region = record.get("region") or step.config.beam.get("region")
    if not record["job_id"]:
        found = dataflow_jobs.find_job(record["job_name"],
                                       dataflow_jobs.list_job_pages(project, region, record["job_name"]))
        if found is None:
            raise RuntimeError(f"no Dataflow job {record['job_name']} is pending, running or done: relaunch "
                               f"the {step.stage} stage")
        record["job_id"] = found["id"]
        step.state.record_job(step.stage, record)
    job = dataflow_jobs.wait_for_job(record["job_id"], lambda job_id: dataflow_jobs.get_job(project, region, job_id),
                                     poll_s=POLL_S, timeout_s=JOB_WAIT_S)
    return {**record, "state": job.get("currentState")}


# --- 3: the lock -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def nightly_lock(step: Step) -> Iterator[locks.Heartbeat]:
    """The nightly lock held as `step.owner` (`locks.LockHeld` when another run holds it), renewed while the block
    runs."""
    settings = step.config.nightly
    lock = locks.acquire_lock(storage.join(step.root, NIGHTLY_LOCK_FILE), step.owner, settings.lock_stale_after_s)
    heartbeat = locks.Heartbeat(lock, settings.heartbeat_interval_s, settings.lock_stale_after_s).start()
    try:
        yield heartbeat
    finally:
        heartbeat.stop()
        try:
            locks.release_lock(heartbeat.lock)
        except locks.LockLost as err:
            log.warning("%s: another run may have overlapped with this step", err)


# --- 4: each stage's check and publish -----------------------------------------------------------------------------
def publish_embed(step: Step, job: dict, heartbeat: locks.Heartbeat) -> dict:
    """The job's staged embeddings → accounting, error budget, manifest, published to the run's `embeddings/`."""
    from pipelines.common.exported_model import read_model_meta
    from pipelines.embed import pipeline as embed

    staging, out = job["outputs"]["staging"], job["outputs"]["out"]
    parameters = job["parameters"]
    if not storage.exists(staging) and storage.is_complete(out):  # published by an earlier try of this step
        stats = storage.read_json(storage.join(out, SUCCESS_FILE))
    else:
        meta = read_model_meta(parameters["model"])
        inputs = argparse.Namespace(catalog=parameters["catalog"], model=parameters["model"],
                                    previous=parameters.get("previous"), out=out)
        stats = embed._final_stats(staging, inputs, step.config, meta, seconds=0.0)
        with heartbeat.fenced():
            pass  # still ours: a taken-over run publishes nothing
        embed.publish_staged(stats, staging, out, meta)
    counts = {key: stats.get("counts", stats).get(key) for key in
              ("read", "new", "changed", "unchanged", "removed", "rejected")}
    counts["rows"] = stats.get("rows")
    return {"out": out, "model_version": stats["model_version"], "counts": counts,
            "previous": parameters.get("previous")}


def publish_index(step: Step, job: dict, heartbeat: locks.Heartbeat, allow_older: bool = False) -> dict:
    """The job's index version → the recall gate → the `CURRENT` swap, fenced by the nightly lock."""
    from pipelines.index import pipeline as index

    out, version = job["outputs"]["out"], job["outputs"]["version"]
    live = versions.read_current(out)
    adopted = live is not None and live.version == version  # an earlier try's swap landed
    if adopted:
        manifest = storage.read_json(storage.join(versions.version_uri(out, version), index.INDEX_MANIFEST_FILE))
    else:
        manifest = index.publish_version(step.config, out, version, run_date=step.date, allow_older=allow_older,
                                         fence=heartbeat.fenced)
    return {"version": version, "version_dir": versions.version_uri(out, version),
            "model_version": manifest["model_version"], "count": manifest["count"],
            "recall_at_10": manifest["recall_at_10"], "adopted": adopted}


def parquet_rows(directory: str) -> int:
    """Rows of the Parquet files in `directory`, from their footers."""
    total = 0
    for match in FileSystems.match([storage.join(directory, "*.parquet")])[0].metadata_list:
        with FileSystems.open(match.path, compression_type="uncompressed") as handle:
            total += pq.read_metadata(handle).num_rows
    return total


def skipped_by_reason(directory: str) -> dict[str, int]:
    """The skipped rows in `directory` counted by reason, one record batch at a time."""
    counts: dict[str, int] = {}
    for match in FileSystems.match([storage.join(directory, "*.parquet")])[0].metadata_list:
        with FileSystems.open(match.path, compression_type="uncompressed") as handle:
            for batch in pq.ParquetFile(handle).iter_batches(columns=["reason"]):
                for reason, n in zip(*batch.column(0).value_counts().flatten()):
                    counts[reason.as_py()] = counts.get(reason.as_py(), 0) + n.as_py()
    return dict(sorted(counts.items()))


def publish_candidates(step: Step, job: dict, heartbeat: locks.Heartbeat) -> dict:
    """The job's staged candidates → their summary (rows from the files' footers) → published to `candidates/`."""
    staging, out = job["outputs"]["staging"], job["outputs"]["out"]
    if not storage.exists(staging) and storage.is_complete(out):  # published by an earlier try of this step
        summary = storage.read_json(storage.join(out, CANDIDATES_SUMMARY_FILE))
    else:
        summary = {"titles": parquet_rows(storage.join(staging, ITEM2ITEM_DIR)),
                   "users": parquet_rows(storage.join(staging, USER_CANDIDATES_DIR)),
                   "skipped": skipped_by_reason(storage.join(staging, SKIPPED_DIR)), "watches": None,
                   "k": step.config.candidates.k, "index_version": job["outputs"].get("index_version"),
                   "index": job["parameters"]["index"], "history": job["parameters"]["history"], "out": out,
                   "job": {"name": job["job_name"], "id": job.get("job_id")}}
        storage.write_json(storage.join(staging, CANDIDATES_SUMMARY_FILE), summary)
        with heartbeat.fenced():
            pass  # still ours: a taken-over run publishes nothing
        storage.publish_directory(staging, out, summary)
    return {"out": out, "titles": summary["titles"], "users": summary["users"], "skipped": summary["skipped"],
            "watches": summary.get("watches")}


PUBLISHERS: dict[str, Callable[..., dict]] = {"embed": publish_embed, "index": publish_index,
                                              "candidates": publish_candidates}


def run_publish(step: Step, allow_older: bool = False) -> dict:
    """Steps 1–5 for `step.stage`; returns its marker (an earlier try's when the stage was published already)."""
    state = step.state
    done = state.stage_result(step.stage)
    if done is not None:
        return {**done, "already_published": True}
    job = finished_job(step)
    with nightly_lock(step) as heartbeat:
        extra = {"allow_older": allow_older} if step.stage == "index" else {}
        result = PUBLISHERS[step.stage](step, job, heartbeat, **extra)
        result["job"] = {"name": job["job_name"], "id": job.get("job_id"), "state": job.get("state")}
        with heartbeat.fenced():
            state.mark_stage_finished(step.stage, result)
    return result


# --- evaluate and report -----------------------------------------------------------------------------------------
def nightly_run(step: Step, catalog: str = "", model: str = "", history: str = "",
                config_argv: Optional[list[str]] = None) -> chain.NightlyRun:
    return chain.NightlyRun(date=step.date, root=step.root, catalog=catalog, model=model, history=history,
                            config=step.config, config_argv=config_argv or [])


def run_evaluate(step: Step, run: chain.NightlyRun) -> dict:
    """`posters evaluate` on the published embeddings and its gates (`chain.evaluate_stage`): a failed gate stops
    the night before the index is published."""
    state = step.state
    done = state.stage_result("evaluate")
    if done is not None:
        return {**done, "already_published": True}
    embed = state.stage_result("embed")
    if embed is None:
        raise FileNotFoundError(f"{state.run_dir}: embed is not published for {step.date}: run "
                                "`posters embed publish` first")
    result = chain.evaluate_stage(run, {"embed": embed}, last_finished_before(run.runs_dir, step.date))
    state.mark_stage_finished("evaluate", result)
    return result


def run_report(step: Step) -> dict:
    """Finishes a night whose stages are all published: overlap@k with the last finished run, `summary.json`
    (the same keys as `posters nightly`'s) and `_SUCCESS`."""
    state, run = step.state, nightly_run(step)
    if state.is_finished():
        return {**state.summary(), "already_finished": True}
    done = {stage: state.stage_result(stage) for stage in chain.STAGES}
    missing = [stage for stage, marker in done.items() if marker is None]
    if missing:
        raise FileNotFoundError(f"{state.run_dir}: {', '.join(missing)} not published for {step.date}: nothing "
                                "to report yet")
    previous_date = last_finished_before(run.runs_dir, step.date)
    summary = {
        "date": step.date, "root": step.root, "run_dir": run.run_dir, "previous_run": previous_date,
        "versions": {"model": done["embed"]["model_version"], "index": done["index"]["version"]},
        "counts": {"embeddings": done["embed"]["counts"], "titles": done["candidates"]["titles"],
                   "users": done["candidates"]["users"], "skipped": done["candidates"]["skipped"]},
        "timings_s": {stage: marker.get("seconds") for stage, marker in done.items()},
        "stages": {stage: {**marker, "ran": True} for stage, marker in done.items()},
        "jobs": {stage: marker.get("job") for stage, marker in done.items() if marker.get("job")},
        "overlap": chain.overlap_or_failure(run, previous_date),
    }
    storage.write_json(storage.join(run.run_dir, NIGHTLY_SUMMARY_FILE), summary)
    state.mark_finished(summary)
    return summary


# --- command lines -------------------------------------------------------------------------------------------------
def step_parser(prog: str, description: str, job: bool) -> argparse.ArgumentParser:
    parser = command_parser(prog, description)
    parser.add_argument("--root", required=True, help="the nightly root: runs/, index/ and nightly.lock")
    parser.add_argument("--date", required=True, help="the run's date, YYYY-MM-DD (the DAG's logical date)")
    if job:
        parser.add_argument("--job-spec", help="the stage's job record (default: <root>/runs/<date>/jobs/<stage>.json)")
        parser.add_argument("--job-id", help="the Dataflow job id, when the record has none (the DAG's XCom)")
        parser.add_argument("--owner", help="who takes the nightly lock (default: nightly <date>)")
    return parser


def parse_step(stage: str, parser: argparse.ArgumentParser, argv: list[str]) -> tuple[Step, argparse.Namespace]:
    args, config, extra = parse_command(parser, argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    chain.check_date(args.date)
    job_id = getattr(args, "job_id", None)
    step = Step(stage=stage, root=args.root.rstrip("/"), date=args.date, config=config,
                owner=getattr(args, "owner", None) or f"nightly {args.date}", job_spec=getattr(args, "job_spec", None),
                job_id=None if job_id in (None, "", "None") else job_id)  # an XCom with no value renders "None"
    return step, args


def _guarded(prog: str, work: Callable[[], dict], printer: Callable[[dict], None]) -> int:
    """Runs a step: one line on stderr and the exit code for what went wrong."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = work()
    except (chain.UsageError, ConfigError) as err:
        print(f"posters {prog}: {err}", file=sys.stderr)
        return chain.EXIT_USAGE
    except locks.LockHeld as err:
        print(f"posters {prog}: {err}", file=sys.stderr)
        return chain.EXIT_LOCKED
    except Exception as err:  # noqa: BLE001 — a failed job, gate or check: nothing was published
        log.debug("posters %s failed", prog, exc_info=True)
        print(f"posters {prog}: {type(err).__name__}: {err}", file=sys.stderr)
        return chain.EXIT_STAGE_FAILED
    printer(result)
    return 0


def parser_for(command: str) -> argparse.ArgumentParser:
    """The flags of one step: `embed publish`, `index publish`, `candidates publish`, `nightly evaluate` or
    `nightly report`."""
    stage, _, verb = command.partition(" ")
    if verb == "publish" and stage in PUBLISHERS:
        parser = step_parser(command, f"check a finished {stage} job's output and publish it (fenced)", True)
        if stage == "index":
            parser.add_argument("--allow-older", action="store_true",
                                help="publish even if the live index was published for a later date")
        return parser
    if command == "nightly evaluate":
        parser = step_parser(command, "evaluate the night's published embeddings; a failed gate stops the night "
                                      "before the index is published", False)
        parser.add_argument("--catalog", required=True, help="catalog manifest (CSV, JSONL or Parquet)")
        parser.add_argument("--model", required=True, help="exported model directory")
        parser.add_argument("--history", required=True, help="watch history: *.csv, *.jsonl or *.parquet (or a glob)")
        return parser
    if command == "nightly report":
        return step_parser(command, "overlap@k with the last finished night; finishes the night", False)
    raise KeyError(f"no step {command!r}")


def _publish_main(stage: str, argv: list[str]) -> int:
    def work() -> dict:
        step, args = parse_step(stage, parser_for(f"{stage} publish"), argv)
        return run_publish(step, getattr(args, "allow_older", False))

    def printer(result: dict) -> None:
        again = " (published by an earlier try: nothing to do)" if result.get("already_published") else ""
        job = result.get("job") or {}
        print(f"{stage} publish: job {job.get('name')} ({job.get('id') or 'no job id'}) → "
              f"{result.get('out') or result.get('version_dir')}{again}")
    return _guarded(f"{stage} publish", work, printer)


def embed_publish_main(argv: list[str]) -> int:
    return _publish_main("embed", argv)


def index_publish_main(argv: list[str]) -> int:
    return _publish_main("index", argv)


def candidates_publish_main(argv: list[str]) -> int:
    return _publish_main("candidates", argv)


def evaluate_main(argv: list[str]) -> int:
    def work() -> dict:
        step, args = parse_step("evaluate", parser_for("nightly evaluate"), argv)
        config_argv = ["--config", args.config] + [arg for item in args.overrides for arg in ("--set", item)]
        return run_evaluate(step, nightly_run(step, args.catalog, args.model, args.history, config_argv))

    def printer(result: dict) -> None:
        print(f"nightly evaluate: {result.get('report') or result.get('skipped')}")
    return _guarded("nightly evaluate", work, printer)


def report_main(argv: list[str]) -> int:
    return _guarded("nightly report", lambda: run_report(parse_step("report", parser_for("nightly report"), argv)[0]),
                    chain.print_summary)
