"""`posters bench embed`: how much of the model's throughput the Beam embed pipeline keeps, measured in one run.

    posters bench embed --config C [--json PATH] [--n N] [--batch B] [beam options]

On the same posters (a generated catalog), the same model (the config's backbone, exported by the trainer's
export with random weights) and the same batch size:
  bare          the embedding model on pre-decoded pixel arrays, batch by batch (the ceiling);
  decode_model  the exported serving function on encoded bytes already in memory (decode + resize + model);
  pipeline      `posters embed` on DirectRunner end to end: start-up, reading, validation, hashing, inference,
                Parquet, rejects, manifest and publish;
and, to explain the difference, the pipeline's per-poster validation alone (a full PIL decode and a hash).
The target is pipeline ≥ 80 % of decode_model. Printed, and written as JSON with `--json`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from pipelines import storage
from pipelines.config import Config, load_config

TARGET_RATIO = 0.8
POSTER_SIZE = (300, 450)  # the generator's default, a common catalog poster size
# DirectRunner runs one bundle at a time unless told otherwise; poster validation (a full decode in PIL) and the
# model then take turns on one core. Threads let them overlap; used unless the command line picks a mode.
DEFAULT_BEAM_ARGS = ["--direct_running_mode=multi_threading", f"--direct_num_workers={os.cpu_count() or 1}"]


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


def make_bench_inputs(workdir: str, config: Config, n: int, seed: int) -> tuple[str, str, object]:
    """A generated catalog of `n` clean posters and an export of the config's model (random weights).

    Returns (catalog manifest path, model directory, the in-memory embedding model the export was made from).
    """
    import keras

    from pipelines.synthetic_catalog import generate_catalog
    from trainer.export import export_model
    from trainer.model import build_model, embedding_model

    catalog_dir = os.path.join(workdir, "catalog")
    generate_catalog(catalog_dir, n=n, seed=seed, width=POSTER_SIZE[0], height=POSTER_SIZE[1])
    keras.utils.set_random_seed(seed)
    embedder = embedding_model(build_model(config.model, num_genres=8))
    model_dir = os.path.join(workdir, "model")
    export_model(embedder, model_dir, config.model.backbone, config.model.input_size, [f"g{i}" for i in range(8)])
    return os.path.join(catalog_dir, "catalog.csv"), model_dir, embedder


def poster_bytes(catalog_csv: str) -> list[bytes]:
    import csv

    base = os.path.dirname(catalog_csv)
    with open(catalog_csv, newline="") as handle:
        return [storage.read_bytes(os.path.join(base, row["poster_uri"])) for row in csv.DictReader(handle)]


def measure_bare(embedder, images: list[bytes], input_size: int, batch: int) -> float:
    import tensorflow as tf

    from pipelines.transform import poster_pixels

    pixels = np.stack([poster_pixels(tf.constant(image), input_size).numpy() for image in images])
    # One trace for every batch size, as the serving signature has (a partial last batch must not retrace).
    model = tf.function(lambda x: embedder(x, training=False),
                        input_signature=[tf.TensorSpec([None, input_size, input_size, 3], tf.uint8)])
    return images_per_s(lambda chunk: model(tf.constant(chunk)).numpy(), pixels, batch)


def measure_decode_model(model_dir: str, images: list[bytes], batch: int) -> tuple[float, float]:
    """(images/s of the exported serving function on encoded bytes, seconds it took to load)."""
    from trainer.export import load_exported_model

    started = time.perf_counter()
    embed, _ = load_exported_model(model_dir)
    load_s = time.perf_counter() - started
    return images_per_s(embed, images, batch), load_s


def measure_validation(images: list[bytes], config: Config) -> float:
    """Throughput of the pipeline's per-poster check (`validate_poster`: header, full decode, sha256) alone."""
    from pipelines.images import validate_poster

    return images_per_s(lambda chunk: [validate_poster(image, config.image) for image in chunk], images, 64)


def measure_pipeline(config_path: str, catalog_csv: str, model_dir: str, out: str, batch: int,
                     beam_args: list[str]) -> tuple[float, float, int]:
    """(images/s, seconds, rows embedded) of one `posters embed` run, start-up included."""
    from pipelines import embed

    argv = ["--config", config_path, "--catalog", catalog_csv, "--model", model_dir, "--out", out,
            "--set", f"embed.min_batch_size={batch}", "--set", f"embed.max_batch_size={batch}", *beam_args]
    started = time.perf_counter()
    stats = embed.run(argv)
    seconds = time.perf_counter() - started
    return stats["rows"] / seconds, seconds, stats["rows"]


def run_bench(config_path: str, overrides: list[str], n: int, batch: int | None, seed: int,
              beam_args: list[str]) -> dict:
    config = load_config(config_path, overrides)
    batch = batch or config.embed.max_batch_size
    if not any(arg.startswith("--direct_running_mode") for arg in beam_args):
        beam_args = DEFAULT_BEAM_ARGS + beam_args
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as workdir:
        catalog_csv, model_dir, embedder = make_bench_inputs(workdir, config, n, seed)
        images = poster_bytes(catalog_csv)
        bare = measure_bare(embedder, images, config.model.input_size, batch)
        decode_model, model_load_s = measure_decode_model(model_dir, images, batch)
        validate = measure_validation(images, config)
        set_args = [arg for item in overrides for arg in ("--set", item)]
        pipeline, seconds, rows = measure_pipeline(config_path, catalog_csv, model_dir, os.path.join(workdir, "out"),
                                                   batch, set_args + beam_args)
    return {
        "bare_images_per_s": round(bare, 1),
        "decode_model_images_per_s": round(decode_model, 1),
        "pipeline_images_per_s": round(pipeline, 1),
        "pipeline_vs_decode_model": round(pipeline / decode_model, 3),
        "target_pipeline_vs_decode_model": TARGET_RATIO,
        "validate_images_per_s": round(validate, 1),
        "pipeline_seconds": round(seconds, 2), "model_load_seconds": round(model_load_s, 2),
        "images": n, "embedded": rows, "batch_size": batch, "backbone": config.model.backbone,
        "input_size": config.model.input_size, "poster_size": "{}x{} JPEG".format(*POSTER_SIZE),
        "beam_args": beam_args,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }


def report_lines(result: dict) -> list[str]:
    ratio = result["pipeline_vs_decode_model"]
    verdict = "meets" if ratio >= result["target_pipeline_vs_decode_model"] else "misses"
    return [
        f"bench embed: {result['images']} posters, {result['backbone']} at {result['input_size']}px, "
        f"batch {result['batch_size']}, {result['machine']['cpus']} CPUs",
        f"  bare model on pixels      {result['bare_images_per_s']:>9.1f} images/s",
        f"  decode + model            {result['decode_model_images_per_s']:>9.1f} images/s",
        f"  Beam pipeline end to end  {result['pipeline_images_per_s']:>9.1f} images/s  "
        f"({result['pipeline_seconds']} s with start-up; the model loads in {result['model_load_seconds']} s)",
        f"  (poster validation alone  {result['validate_images_per_s']:>9.1f} images/s: the pipeline's extra decode)",
        f"  pipeline / decode+model   {ratio:>9.1%}  ({verdict} the {result['target_pipeline_vs_decode_model']:.0%} "
        "target)",
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posters bench embed", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--json", help="write the figures here as JSON")
    parser.add_argument("--n", type=int, default=3000, help="posters to embed (default: %(default)s)")
    parser.add_argument("--batch", type=int, help="batch size (default: the config's embed.max_batch_size)")
    parser.add_argument("--seed", type=int, default=0)
    args, beam_args = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = run_bench(args.config, args.overrides, args.n, args.batch, args.seed, beam_args)
    print("\n".join(report_lines(result)), flush=True)
    if args.json:
        storage.write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode("utf-8"))
    return 0
