"""Flex Template launcher: builds one stage's Dataflow job, submits it, writes its job spec, and exits.

    python flex_template/launch.py STAGE --date YYYY-MM-DD [--config C] [stage parameters] [--job_spec_out URI]
                                   [beam options]

In a template the stage comes from `POSTERS_STAGE`, set per template by `make flex-templates`, and the
parameters are the template's (flex_template/<stage>_metadata.json names each one this file reads). The launcher
never waits: it calls `pipeline.run()` and returns (a launcher is no place to wait on jobs or chain them; the
Composer DAG does that). So it publishes nothing either: the job writes into a staging location named for the
job, recorded in the job spec, and the publish step after the job (`posters <stage> publish --job-spec URI`)
checks and publishes it.

The job name is deterministic (`pipelines.common.dataflow_jobs.job_name`: stage, date, a fingerprint of the config
and the stage's inputs) unless `--job_name` is given. On Dataflow without `--template_location` (a launch from a
shell or a driver, not from the template service), the job recorded in the job spec by an earlier try, or any job
of that name, that is queued, running or done is reused instead of being launched again. The job spec (with the
job id) is written as soon as the job is submitted, before anything waits on it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from pipelines.common import dataflow_jobs, storage
from pipelines.common.command_line import beam_argv, make_pipeline
from pipelines.config import Config, load_config

DEFAULT_CONFIG = "configs/dataflow.yaml"
# Every parameter a stage's launcher reads: name → required. The metadata files list exactly these.
STAGE_PARAMETERS = {
    "preprocess": {"catalog": True, "out": True},
    "embed": {"catalog": True, "model": True, "out": True, "previous": False, "previous_runs": False},
    "index": {"embeddings": True, "out": True},
    "candidates": {"index": True, "embeddings": True, "history": True, "out": True},
}
COMMON_PARAMETERS = {"config": False, "date": False, "job_spec_out": False}


def parameters_of(stage: str) -> dict[str, bool]:
    """The template parameters of `stage` (name → required)."""
    return {**STAGE_PARAMETERS[stage], **COMMON_PARAMETERS}


def parse_launch_args(stage: str, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The stage's parameters from `argv`; everything else is returned untouched for Beam."""
    parser = argparse.ArgumentParser(prog=f"launch.py {stage}", description=f"launch the {stage} Dataflow job")
    for name, required in parameters_of(stage).items():
        parser.add_argument(f"--{name}", required=required)
    args, beam_args = parser.parse_known_args(argv)
    args.config = args.config or DEFAULT_CONFIG
    args.date = args.date or dt.datetime.now(dt.UTC).date().isoformat()
    if getattr(args, "previous_runs", None):
        if args.previous:
            parser.error("give --previous or --previous_runs, not both")
        args.previous = previous_embeddings(args.previous_runs, args.date)
    return args, beam_args


def previous_embeddings(runs_dir: str, date: str) -> str | None:
    """`<runs_dir>/<d>/embeddings` of the last night before `date` that finished (`_SUCCESS`), or None on the
    first night: a failed or missing night is skipped, so one bad night does not break the ones after it."""
    from pipelines.nightly.run_state import last_finished_before

    finished = last_finished_before(runs_dir, date)
    return storage.join(runs_dir, finished, "embeddings") if finished else None


def job_staging_uri(final_uri: str, job_name: str) -> str:
    """Where the job `job_name` writes the output that is published to `final_uri`: a sibling named for the job,
    so a relaunch of the same job writes to the same place and the publish step finds it from the job spec."""
    parent, name = final_uri.rstrip("/").rsplit("/", 1) if "/" in final_uri.rstrip("/") else (".", final_uri)
    return storage.join(parent, f".staging-{name}-{job_name}")


def _flag_value(beam_args: list[str], name: str) -> str | None:
    for i, arg in enumerate(beam_args):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(beam_args):
            return beam_args[i + 1]
    return None


# --- what each stage's job computes (the stages' own wiring, imported read-only) -----------------------------

def build_preprocess(pipeline, args, config: Config, job_name: str) -> dict:
    from pipelines.preprocess.pipeline import build_pipeline

    staging = job_staging_uri(args.out, job_name)
    work_dir = f"{staging}-work"  # tensorflow-transform's temp files and transform_fn, copied in at publish
    build_pipeline(pipeline, args.catalog, staging, work_dir, config)
    return {"staging": staging, "work_dir": work_dir, "out": args.out}


def build_embed(pipeline, args, config: Config, job_name: str) -> dict:
    from pipelines.embed.pipeline import build_pipeline

    staging = job_staging_uri(args.out, job_name)
    build_pipeline(pipeline, args.catalog, args.model, staging, config, args.previous)
    return {"staging": staging, "out": args.out}


def build_index(pipeline, args, config: Config, job_name: str) -> dict:
    import apache_beam as beam

    from pipelines.common import versions
    from pipelines.embed.reader import describe_embeddings
    from pipelines.index import faiss_index
    from pipelines.index.pipeline import BuildShardedIndex

    settings, info = config.index, describe_embeddings(args.embeddings)
    if info.rows == 0:
        raise faiss_index.IndexBuildError(f"{args.embeddings} holds no embeddings: nothing to index")
    plan = faiss_index.plan_index(info.rows, info.dim, settings.factory, settings.flat_max_vectors, settings.nlist,
                                  settings.num_shards, settings.vectors_per_shard, settings.train_sample_size)
    version = versions.new_version()
    version_dir = versions.version_uri(args.out, version)
    _ = (pipeline | "EmbeddingFiles" >> beam.Create(info.files)
         | "BuildShardedIndex" >> BuildShardedIndex(info, plan, settings, version_dir, time.time()))
    return {"version": version, "version_dir": version_dir, "out": args.out}


def build_candidates(pipeline, args, config: Config, job_name: str) -> dict:
    from pipelines.candidates.pipeline import build_pipeline, plan_candidates

    staging = job_staging_uri(args.out, job_name)
    plan = plan_candidates(args.index, args.embeddings, args.history, staging, config)
    build_pipeline(pipeline, plan)
    return {"staging": staging, "out": args.out, "index_version": plan.index_version}


BUILDERS = {"preprocess": build_preprocess, "embed": build_embed, "index": build_index,
            "candidates": build_candidates}


# --- submitting ----------------------------------------------------------------------------------------------

def existing_job(options, name: str, job_spec_out: str | None = None) -> dict | None:
    """On Dataflow, outside a template launch: the job to wait for instead of launching `name` again — the one
    recorded at `job_spec_out` by an earlier try, if it is still pending, running or done, else any such job of
    that name (`dataflow_jobs.reusable_job`)."""
    cloud = options.view_as(GoogleCloudOptions)
    if options.view_as(StandardOptions).runner != "DataflowRunner" or cloud.template_location:
        return None
    recorded = storage.read_json(job_spec_out) if job_spec_out and storage.exists(job_spec_out) else {}
    recorded_id = recorded.get("job_id") if recorded.get("job_name") == name else None
    return dataflow_jobs.reusable_job(
        name, recorded_id, lambda job_id: dataflow_jobs.get_job(cloud.project, cloud.region, job_id),
        lambda: dataflow_jobs.list_job_pages(cloud.project, cloud.region, name))


def _job_id(result) -> str | None:
    """The submitted job's id; None where the runner has none (DirectRunner, or --template_location, where the
    template service submits the job this launcher described)."""
    job_id = getattr(result, "job_id", None)
    return job_id() if callable(job_id) else None


def submit(stage: str, argv: list[str]) -> str | None:
    """Builds `stage`'s pipeline from the launcher's `argv`, submits it with `pipeline.run()` (never waiting for
    it), writes the job spec to `--job_spec_out` when given, and returns the job id (None when the runner gives
    none). On Dataflow a job of the same name already queued, running or done is returned instead."""
    args, beam_args = parse_launch_args(stage, argv)
    config = load_config(args.config)
    inputs = {name: getattr(args, name) for name in STAGE_PARAMETERS[stage]}
    fingerprint = dataflow_jobs.config_fingerprint(config.model_dump(mode="json"), inputs)
    name = _flag_value(beam_args, "job_name") or dataflow_jobs.job_name(stage, args.date, fingerprint)
    extra = [] if _flag_value(beam_args, "job_name") else [f"--job_name={name}"]
    worker_image = os.environ.get("POSTERS_WORKER_IMAGE")
    if worker_image and not _flag_value(beam_args, "sdk_container_image"):
        extra.append(f"--sdk_container_image={worker_image}")
    flags = (list(config.nightly.embed_beam_args) if stage == "embed" else []) + beam_args + extra
    options = PipelineOptions(beam_argv(config, flags))  # looked up before a Pipeline validates its buckets

    found = existing_job(options, name, args.job_spec_out)
    if found:
        job_id, outputs, reused = found["id"], None, True
    else:
        pipeline = make_pipeline(config, flags, save_main_session=False)
        outputs = BUILDERS[stage](pipeline, args, config, name)
        result = pipeline.run()  # submit only: waiting is the scheduler's job
        job_id, reused = _job_id(result), False
    spec = {"stage": stage, "job_name": name, "job_id": job_id, "reused_existing_job": reused,
            "runner": options.view_as(StandardOptions).runner or "DirectRunner", "date": args.date,
            "project": options.view_as(GoogleCloudOptions).project,
            "region": options.view_as(GoogleCloudOptions).region,
            "fingerprint": fingerprint, "parameters": {**inputs, "config": args.config, "date": args.date},
            "outputs": outputs, "submitted_at": storage.utc_now()}
    if args.job_spec_out:
        storage.write_json(args.job_spec_out, spec)
    print(f"launch {stage}: job {name} ({job_id or 'no job id from this runner'})"
          + (" already exists: not launched again" if reused else " submitted"), flush=True)
    return job_id


def stage_and_argv(argv: list[str]) -> tuple[str, list[str]]:
    """`STAGE args…` from the command line, or the template's `POSTERS_STAGE` and all of `argv`."""
    if argv and argv[0] in STAGE_PARAMETERS:
        return argv[0], argv[1:]
    stage = os.environ.get("POSTERS_STAGE", "")
    if stage not in STAGE_PARAMETERS:
        raise SystemExit(f"launch.py: name the stage ({', '.join(STAGE_PARAMETERS)}) as the first argument or in "
                         f"POSTERS_STAGE (got {stage!r})")
    return stage, list(argv)


def main(argv: list[str] | None = None) -> int:
    stage, rest = stage_and_argv(sys.argv[1:] if argv is None else list(argv))
    submit(stage, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
