"""`posters bench embed`: how much of the model's throughput the Beam embed pipeline keeps, measured in one run.

    posters bench embed --config C [--json PATH] [--n N] [--distinct D] [--batch B] [--repeats R] [--profile PSTATS]
                        [beam options]

On the same posters (a generated catalog of N titles whose posters cycle through D distinct generated JPEGs,
so a large N costs little to generate), the same model (the config's backbone, exported untrained by
`posters export-model`) and the same batch size:
  bare                   the embedding model on pre-decoded pixel arrays, batch by batch (the ceiling);
  decode_model           the exported serving function on the encoded bytes of every title, already in memory
                         (decode + resize + model): the baseline;
  pipeline               `posters embed` (a first run, no --previous) on DirectRunner end to end: start-up,
                         reading the catalog and every poster file, per-poster checks and hashing, RunInference
                         at the same batch size whose handler decodes each batch once (the posters' only decode,
                         which validates them) and runs the export's pixel signature, Parquet, rejects, manifest
                         and publish;
and, to explain the difference (context, not the target): the per-poster checks alone (header, hashing; no decode),
checks + batch decode + model in one loop (what the pipeline must compute, without Beam), and the pipeline's
fixed start-up (a run on one batch of titles) with its throughput once started. The target is pipeline ≥ 90 % of
decode_model.
The pipeline runs on what `posters embed` itself gets from the config's `beam:` section and the Beam flags given
here, nothing added: with configs/local.yaml that is DirectRunner in its default `in_memory` mode (one process,
one bundle at a time), the product's local run; `--direct_running_mode=multi_threading --direct_num_workers=2`
measures another mode (the report names the one it ran).
`--repeats` alternates decode_model and pipeline runs and reports medians (the machine may be shared).
Printed, and written as JSON with `--json`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from pipelines.common import storage
from pipelines.config import Config, load_config

TARGET_RATIO = 0.9
POSTER_SIZE = (300, 450)  # the generator's default, a common catalog poster size
DEFAULT_N = 12000  # enough that the pipeline's fixed start-up (~3 s) is a small part of its time
DEFAULT_DISTINCT = 2000  # distinct posters generated (~8 ms each); titles cycle through them
MEASURES = {
    "bare_images_per_s": "embedding model on pre-decoded uint8 pixel arrays (decoded outside the timing)",
    "decode_model_images_per_s": "exported serving function (decode + resize + model) on the encoded bytes "
                                 "of every title, in memory; the baseline of the target",
    "pipeline_images_per_s": "`posters embed` end to end on DirectRunner (start-up, catalog, file reads, "
                             "per-poster checks, hashing, RunInference (the handler's one batch decode, then the "
                             "pixel signature) at the same batch size, Parquet, rejects, publish): titles embedded / "
                             "wall seconds",
    "validate_images_per_s": "the pipeline's per-poster `validate_poster(decode=False)` alone (header checks, "
                             "sha256; the decode is the model handler's)",
    "validate_decode_model_images_per_s": "validate_poster(decode=False), then the handler's batch decode and the "
                                          "pixel signature, batch by batch, no Beam: the work the pipeline does per "
                                          "poster (context, not the target)",
    "pipeline_startup_seconds": "wall seconds of a pipeline run on one batch of titles, after the measured "
                                "runs (fixed cost, imports already done)",
    "pipeline_steady_images_per_s": "(N - one batch) / (pipeline seconds - start-up seconds)",
}


def batches(items, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def images_per_s(fn, items, batch: int) -> float:
    """Throughput of `fn` over `items` in batches, after one warm-up batch (tracing, allocations)."""
    fn(items[:batch])
    started = time.perf_counter()
    for chunk in batches(items, batch):
        fn(chunk)
    return len(items) / (time.perf_counter() - started)


def make_bench_inputs(workdir: str, config_path: str, overrides: list[str], n: int, seed: int,
                      distinct: int | None = None) -> tuple[str, str]:
    """A catalog of `n` titles with clean posters (cycling through `distinct` generated ones, all of them when
    None) and an export of the config's model with random weights, made by `posters export-model` (the
    trainer's own export, run as a user would).

    Returns (catalog manifest path, model directory).
    """
    from pipelines import cli
    from pipelines.synthetic.catalog import generate_catalog

    catalog_dir = os.path.join(workdir, "catalog")
    distinct = min(n, distinct or n)
    generate_catalog(catalog_dir, n=distinct, seed=seed, width=POSTER_SIZE[0], height=POSTER_SIZE[1])
    if distinct < n:
        _repeat_titles(os.path.join(catalog_dir, "catalog.csv"), n)
    model_dir = os.path.join(workdir, "model")
    code = cli.main(["export-model", "--config", config_path, "--out", model_dir, "--seed", str(seed),
                     *[arg for item in overrides for arg in ("--set", item)]])
    if code:
        raise SystemExit(f"bench embed: posters export-model failed with exit code {code}")
    return os.path.join(catalog_dir, "catalog.csv"), model_dir


def _repeat_titles(catalog_csv: str, n: int) -> None:
    """Rewrites the manifest to `n` titles: copy k of a title gets id `<id>-k` and the same poster file."""
    import csv

    with open(catalog_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    with open(catalog_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for index in range(n):
            row = dict(rows[index % len(rows)])
            if index >= len(rows):
                row["title_id"] = f"{row['title_id']}-{index // len(rows)}"
            writer.writerow(row)


def poster_bytes(catalog_csv: str) -> list[bytes]:
    """Every title's poster bytes, in manifest order (a file named by several titles is read once, shared)."""
    import csv

    base = os.path.dirname(catalog_csv)
    cache: dict[str, bytes] = {}
    with open(catalog_csv, newline="") as handle:
        uris = [os.path.join(base, row["poster_uri"]) for row in csv.DictReader(handle)]
    return [cache[uri] if uri in cache else cache.setdefault(uri, storage.read_bytes(uri)) for uri in uris]


def measure_bare(model_dir: str, images: list[bytes], input_size: int, batch: int) -> float:
    """The exported model's pixel signature on pre-decoded posters: the model alone, no decode."""
    import tensorflow as tf

    from pipelines.common.pixels import poster_pixels
    from pipelines.contracts import PIXELS_INPUT, PIXELS_SIGNATURE, SERVING_OUTPUT

    # Decoded once per distinct poster (outside the timing); each batch gathers its titles' pixels.
    slots: dict[int, int] = {}
    distinct: list[bytes] = []
    for image in images:
        if id(image) not in slots:
            slots[id(image)] = len(distinct)
            distinct.append(image)
    index = np.array([slots[id(image)] for image in images])
    pixels = np.stack([poster_pixels(tf.constant(image), input_size).numpy() for image in distinct])
    model = tf.saved_model.load(model_dir).signatures[PIXELS_SIGNATURE]
    return images_per_s(lambda chunk: model(**{PIXELS_INPUT: tf.constant(pixels[chunk])})[SERVING_OUTPUT].numpy(),
                        index, batch)


def load_serving_function(model_dir: str):
    """(the exported serving function, exactly as the pipeline's model handler loads it; seconds to load)."""
    from pipelines.common.exported_model import load_exported_model

    started = time.perf_counter()
    embed, _ = load_exported_model(model_dir)
    return embed, time.perf_counter() - started


def measure_validation(images: list[bytes], config: Config) -> float:
    """Throughput of the pipeline's per-poster check (`validate_poster(decode=False)`: header, sha256) alone."""
    from pipelines.common.posters import validate_poster

    return images_per_s(lambda chunk: [validate_poster(image, config.image, decode=False) for image in chunk],
                        images, 64)


def measure_validate_decode_model(model_dir: str, images: list[bytes], config: Config, batch: int) -> float:
    """validate_poster(decode=False) on each poster, then the batch decoded in one call and embedded by the pixel
    signature, as the pipeline's model handler does: the pipeline's work minus Beam."""
    from pipelines.common.exported_model import load_exported_model
    from pipelines.common.pixels import PixelDecoder
    from pipelines.common.posters import validate_poster

    embed_pixels, _ = load_exported_model(model_dir, pixels=True)
    decoder = PixelDecoder(config.model.input_size)
    return images_per_s(lambda chunk: embed_pixels(decoder.decode_batch(
        [validate_poster(image, config.image, decode=False).image_bytes for image in chunk])), images, batch)


def _head_catalog(catalog_csv: str, rows: int) -> str:
    """A copy of the manifest with its first `rows` titles (same poster files), for the start-up run."""
    with open(catalog_csv) as handle:
        lines = handle.readlines()[:rows + 1]
    head = os.path.join(os.path.dirname(catalog_csv), "head.csv")
    with open(head, "w") as handle:
        handle.writelines(lines)
    return head


def measure_pipeline(config_path: str, catalog_csv: str, model_dir: str, out: str, batch: int,
                     beam_args: list[str]) -> tuple[float, float, int]:
    """(images/s, seconds, rows embedded) of one `posters embed` run, start-up included."""
    from pipelines.embed import pipeline as embed

    argv = ["--config", config_path, "--catalog", catalog_csv, "--model", model_dir, "--out", out,
            "--set", f"embed.min_batch_size={batch}", "--set", f"embed.max_batch_size={batch}", *beam_args]
    started = time.perf_counter()
    stats = embed.run(argv)
    seconds = time.perf_counter() - started
    return stats["rows"] / seconds, seconds, stats["rows"]


def profile_parts() -> dict[str, list]:
    """The parts of a `posters embed` run that `--profile` times, each as the functions whose cumulative time
    (on the thread that runs the bundles) it sums; none of them calls another part's."""
    from pipelines.common import catalog, catalog_rows, pixels, posters
    from pipelines.embed import model_handler, writer

    return {
        "decode (model handler, one call per batch)": [pixels.PixelDecoder.decode_batch, pixels.PixelDecoder.decode],
        "model (pixel signature)": [model_handler.PosterEmbedder.embed_batch],
        "poster reads (fetch step, waiting on its read threads)": [posters.FetchPostersDoFn.process],
        "poster checks (header, sha256)": [posters.validate_poster],
        "poster metadata look-ups": [posters.poster_object],
        "catalog (read ranges, genres, duplicates)": [catalog.read_range, catalog.respelled,
                                                      catalog_rows._check_row, catalog_rows._resolved,
                                                      catalog_rows._check_genres],
        "Parquet write": [writer.write_shard],
        "model load in the worker": [model_handler.PosterModelHandler.load_model],
    }


def profile_breakdown(stats, total_s: float) -> dict[str, float]:
    """Seconds per part of a profiled run of `total_s` seconds (`pstats.Stats` of the thread that ran every
    bundle): `profile_parts`, the launcher's own work around the job (model checks, pipeline construction,
    accounting, manifest, publish: `total_s` less `Pipeline.run`), and the rest of `Pipeline.run`: Beam itself
    (encoding and decoding elements between fused stages, bundle set-up, the steps' wrappers, metrics) and the
    small steps not named."""
    import apache_beam as beam

    def key(function):
        code = function.__code__
        return code.co_filename, code.co_firstlineno, code.co_name

    by_key = {key(function): name for name, functions in profile_parts().items() for function in functions}
    parts = dict.fromkeys(profile_parts(), 0.0)
    for found, (_calls, _primitive, _own, cumulative, _callers) in stats.stats.items():
        if found in by_key:
            parts[by_key[found]] += cumulative
    runner_s = stats.stats.get(key(beam.Pipeline.run), (0, 0, 0, total_s))[3]
    named = sum(parts.values())
    parts["launcher around the job (checks, construction, publish)"] = total_s - runner_s
    parts["Beam runner and the unnamed steps (the rest)"] = runner_s - named
    return {name: round(seconds, 2) for name, seconds in parts.items()}


def profile_pipeline(config_path: str, catalog_csv: str, model_dir: str, out: str, batch: int,
                     beam_args: list[str], stats_path: str) -> dict:
    """One `posters embed` run under cProfile, on DirectRunner `in_memory` (the one mode in which the launcher's
    thread runs every bundle, so that its profile covers the whole job); the pstats go to `stats_path`.

    Returns {"seconds", "images_per_s", "parts": `profile_breakdown`}. Profiling slows Python code more than
    TensorFlow's, so read the parts as shares of a slower run."""
    import cProfile
    import pstats

    from pipelines.embed import pipeline as embed

    argv = ["--config", config_path, "--catalog", catalog_csv, "--model", model_dir, "--out", out,
            "--set", f"embed.min_batch_size={batch}", "--set", f"embed.max_batch_size={batch}",
            *[arg for arg in beam_args if not arg.startswith(("--direct_running_mode", "--direct_num_workers"))],
            "--direct_running_mode=in_memory"]
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    try:
        stats = embed.run(argv)
    finally:
        profiler.disable()
    seconds = time.perf_counter() - started
    profiler.dump_stats(stats_path)
    return {"seconds": round(seconds, 2), "images_per_s": round(stats["rows"] / seconds, 1),
            "parts": profile_breakdown(pstats.Stats(stats_path), seconds)}


def runner_description(config: Config, beam_args: list[str]) -> str:
    """The runner `posters embed` gets from the config's `beam:` section and these flags, e.g. `DirectRunner
    in_memory` (the local default), `DirectRunner multi_threading ×2`."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    from pipelines.common.command_line import beam_argv

    options = PipelineOptions(beam_argv(config, beam_args))
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    direct = options.view_as(DirectOptions)
    if "direct" not in str(runner).lower():
        return str(runner)
    workers = f" ×{direct.direct_num_workers}" if direct.direct_running_mode != "in_memory" else ""
    return f"{runner} {direct.direct_running_mode}{workers}"


def run_bench(config_path: str, overrides: list[str], n: int, batch: int | None, seed: int,
              beam_args: list[str], distinct: int | None = DEFAULT_DISTINCT, repeats: int = 1,
              profile: str | None = None) -> dict:
    config = load_config(config_path, overrides)
    batch = batch or config.embed.max_batch_size
    set_args = [arg for item in overrides for arg in ("--set", item)]
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as workdir:
        catalog_csv, model_dir = make_bench_inputs(workdir, config_path, overrides, n, seed, distinct)
        images = poster_bytes(catalog_csv)
        bare = measure_bare(model_dir, images, config.model.input_size, batch)
        embed, model_load_s = load_serving_function(model_dir)
        validate = measure_validation(images, config)
        validate_decode_model = measure_validate_decode_model(model_dir, images, config, batch)
        decode_models, pipelines, runs = [], [], []
        for repeat in range(max(1, repeats)):  # alternated, so a busy spell on a shared machine hits both
            decode_models.append(images_per_s(embed, images, batch))
            pipeline, seconds, rows = measure_pipeline(config_path, catalog_csv, model_dir,
                                                       os.path.join(workdir, f"out{repeat}"), batch,
                                                       set_args + beam_args)
            pipelines.append(pipeline)
            runs.append(seconds)
        # After the measured runs, so their first one still pays Beam's one-time imports as `posters embed` does.
        _, startup_s, startup_rows = measure_pipeline(config_path, _head_catalog(catalog_csv, min(n, batch)),
                                                      model_dir, os.path.join(workdir, "startup"), batch,
                                                      set_args + beam_args)
        profiled = profile_pipeline(config_path, catalog_csv, model_dir, os.path.join(workdir, "profiled"), batch,
                                    set_args + beam_args, profile) if profile else None
    decode_model, pipeline, seconds = (float(np.median(values)) for values in (decode_models, pipelines, runs))
    steady = (rows - startup_rows) / (seconds - startup_s) if rows > startup_rows and seconds > startup_s else None
    return {
        "bare_images_per_s": round(bare, 1),
        "decode_model_images_per_s": round(decode_model, 1),
        "pipeline_images_per_s": round(pipeline, 1),
        "pipeline_vs_decode_model": round(pipeline / decode_model, 3),
        "target_pipeline_vs_decode_model": TARGET_RATIO,
        "validate_images_per_s": round(validate, 1),
        "validate_decode_model_images_per_s": round(validate_decode_model, 1),
        "pipeline_startup_seconds": round(startup_s, 2),
        "pipeline_steady_images_per_s": round(steady, 1) if steady else None,
        "samples": {"decode_model_images_per_s": [round(v, 1) for v in decode_models],
                    "pipeline_images_per_s": [round(v, 1) for v in pipelines]},
        "measures": MEASURES,
        "pipeline_seconds": round(seconds, 2), "model_load_seconds": round(model_load_s, 2),
        "images": n, "distinct_posters": min(n, distinct or n), "embedded": rows, "batch_size": batch,
        "backbone": config.model.backbone,
        "input_size": config.model.input_size, "poster_size": "{}x{} JPEG".format(*POSTER_SIZE),
        "beam_args": beam_args, "runner": runner_description(config, beam_args),
        **({"profile": {**profiled, "pstats": profile}} if profiled else {}),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


def report_lines(result: dict) -> list[str]:
    ratio = result["pipeline_vs_decode_model"]
    verdict = "meets" if ratio >= result["target_pipeline_vs_decode_model"] else "misses"
    return [
        f"bench embed: {result['images']} posters ({result['distinct_posters']} distinct), {result['backbone']} at "
        f"{result['input_size']}px, "
        f"batch {result['batch_size']}, {result['machine']['cpus']} CPUs, pipeline on {result['runner']}",
        f"  bare model on pixels      {result['bare_images_per_s']:>9.1f} images/s",
        f"  decode + model            {result['decode_model_images_per_s']:>9.1f} images/s",
        f"  Beam pipeline end to end  {result['pipeline_images_per_s']:>9.1f} images/s  "
        f"({result['pipeline_seconds']} s with start-up; the model loads in {result['model_load_seconds']} s)",
        f"  (poster validation alone  {result['validate_images_per_s']:>9.1f} images/s: header, hash; "
        "no decode)",
        f"  (checks+decode+model      {result['validate_decode_model_images_per_s']:>9.1f} images/s: the pipeline's "
        "work without Beam)",
        f"  (pipeline start-up        {result['pipeline_startup_seconds']:>9.2f} s; once started "
        f"{result['pipeline_steady_images_per_s'] or float('nan'):.1f} images/s)",
        f"  pipeline / decode+model   {ratio:>9.1%}  ({verdict} the {result['target_pipeline_vs_decode_model']:.0%} "
        "target)",
        *_profile_lines(result.get("profile")),
    ]


def _profile_lines(profile: dict | None) -> list[str]:
    if not profile:
        return []
    lines = [f"  profiled run (cProfile, DirectRunner in_memory): {profile['seconds']} s, "
             f"{profile['images_per_s']} images/s; pstats in {profile['pstats']}"]
    for name, seconds in sorted(profile["parts"].items(), key=lambda part: -part[1]):
        lines.append(f"    {name:<58} {seconds:>7.2f} s  {seconds / profile['seconds']:>6.1%}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posters bench embed", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="local.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="titles to embed (default: %(default)s)")
    parser.add_argument("--distinct", type=int, default=DEFAULT_DISTINCT,
                        help="distinct posters generated; titles cycle through them (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="alternated decode+model and pipeline runs; medians reported (default: %(default)s)")
    parser.add_argument("--batch", type=int, help="batch size (default: the config's embed.max_batch_size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", metavar="PSTATS",
                        help="also run the pipeline once under cProfile (DirectRunner in_memory), write its pstats "
                             "here and print where its time goes")
    args, beam_args = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = run_bench(args.config, args.overrides, args.n, args.batch, args.seed, beam_args, args.distinct,
                       args.repeats, args.profile)
    print("\n".join(report_lines(result)), flush=True)
    if args.json:
        storage.write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    return 0
