"""Where `posters index` spends its time, for `posters bench nightly`'s index row: each of the pipeline's plain
functions timed (wall and CPU seconds) in one process on one embeddings directory, in the pipeline's order; with
`--beam`, then the pipeline itself on the DirectRunner and Beam's own per-step execution times.

    python -m pipelines.bench.nightly_index_profile --embeddings DIR [--set index.factory=IVF2048,Flat] [--beam]

Generated embeddings: `--generate N` writes N clustered unit vectors to DIR first (as `posters bench nightly`).
The one-process run holds the whole catalog: it is a measurement, not a way to build an index.
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

DEFAULT_SETS = ["index.factory=IVF2048,Flat", "index.nprobe=6", "index.tune_nprobe=false"]


def _clock(name: str, run: Callable[[], object], rows: list) -> object:
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    rows.append((name, time.perf_counter() - wall, time.process_time() - cpu))
    print(f"  {name:<58} wall {rows[-1][1]:8.2f} s   CPU {rows[-1][2]:8.2f} s", flush=True)
    return result


def profile_steps(embeddings: str, sets: list[str]) -> list[tuple[str, float, float]]:
    """(step, wall s, CPU s) of each plain function the index pipeline runs, one process."""
    import pyarrow.parquet as pq

    from pipelines.config import load_config
    from pipelines.embed.reader import describe_embeddings
    from pipelines.index import backends
    from pipelines.index import pipeline as ip

    settings = load_config("configs/local.yaml", sets).index
    info = describe_embeddings(embeddings)
    plan = backends.plan_index(info.rows, info.dim, settings)
    nprobes = backends.search_candidates(plan, settings, info.dim)
    rows: list = []
    print(f"{info.rows:,} vectors, {plan.factory}, {plan.num_shards} shards, train {plan.train_size:,}, "
          f"{settings.recall_queries} recall queries, nprobe {nprobes}", flush=True)
    tables = _clock("read Parquet (title_id, embedding, model_version)",
                    lambda: [pq.read_table(f, columns=["title_id", "embedding", "model_version"]) for f in info.files],
                    rows)
    batches = _clock("ToVectorBatches (stable ids, unit-norm check)",
                     lambda: [ip.to_vector_batch(t, info.dim, info.model_version) for t in tables], rows)
    tables = None  # freed: the one-process run holds the catalog once at a time
    histogram = _clock("IdHistogram (title ids read again, hashed)", lambda: sum(
        ip.id_histogram(pq.read_table(f, columns=["title_id"]).column("title_id").to_pylist()) for f in info.files),
        rows)
    size = plan.train_size + settings.recall_queries
    limit = ip.sample_range_limit(histogram, size)

    def sample():
        combine = ip.SmallestIds(size, info.dim)
        accumulator = combine.create_accumulator()
        for batch in batches:
            accumulator = combine.add_input(accumulator, ip.rows_below_limit(batch, limit))
        return accumulator

    queries, training = ip.split_sample(_clock("SampleSmallestIds (below the limit, smallest)", sample, rows),
                                        settings.recall_queries)
    empty = _clock("TrainEmptyIndex", lambda: backends.train_empty(plan, info.dim, training.vectors, settings), rows)
    _clock("pickle + unpickle every batch once (one shuffle's coding)",
           lambda: [pickle.loads(pickle.dumps(b, pickle.HIGHEST_PROTOCOL)) for b in batches], rows)
    parts = _clock("AssignShards (split by id mod S)",
                   lambda: [part for b in batches for part in ip.split_by_shard(b, plan.num_shards)], rows)
    batches = None
    by_shard = collections.defaultdict(list)
    for shard, part in parts:
        by_shard[shard].append(part)
    parts = None
    shards = _clock("concat each shard's batches", lambda: {s: ip.concat_batches(b, info.dim)
                                                           for s, b in sorted(by_shard.items())}, rows)
    by_shard = None
    out = tempfile.mkdtemp(prefix="posters-index-profile-")
    try:
        for shard, batch in shards.items():
            _profile_shard(shard, batch, empty, queries, plan, settings, nprobes, out, rows)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"  {'total':<58} wall {sum(r[1] for r in rows):8.2f} s   CPU {sum(r[2] for r in rows):8.2f} s")
    return rows


def _profile_shard(shard, batch, empty, queries, plan, settings, nprobes, out, rows) -> None:
    """BuildShard's steps on one shard, each timed."""
    from pipelines.index import backends
    from pipelines.index import faiss_index as vi
    from pipelines.index import pipeline as ip

    dim = batch.vectors.shape[1]
    _clock(f"shard {shard}: unique-id check", lambda: vi.check_unique_ids(batch.ids, batch.title_ids), rows)
    _clock(f"shard {shard}: id map (sort, Parquet, write)", lambda: ip.write_id_map(shard, batch, out), rows)
    index = _clock(f"shard {shard}: add_with_ids",
                   lambda: backends.add_to_shard(plan, empty, batch.ids, batch.vectors, settings, dim), rows)
    data = _clock(f"shard {shard}: serialise", lambda: backends.serialize(index), rows)
    _clock(f"shard {shard}: sha256 + write",
           lambda: (vi.sha256_hex(data), open(os.path.join(out, "shard"), "wb").write(data)), rows)
    _clock(f"shard {shard}: recall queries, exact search",
           lambda: vi.exact_search(queries.vectors, batch.vectors, batch.ids, ip.RECALL_K + 1), rows)

    def approx():
        for nprobe in nprobes:
            backends.set_breadth(index, nprobe)
            vi.search(index, queries.vectors, ip.RECALL_K + 1)

    _clock(f"shard {shard}: recall queries, index search", approx, rows)


def beam_steps(embeddings: str, sets: list[str], runner_flags: list[str]) -> dict:
    """The index pipeline on the DirectRunner; Beam's execution msecs per step (summed over bundles) → seconds."""
    import apache_beam as beam

    from pipelines.common.command_line import make_pipeline
    from pipelines.config import load_config
    from pipelines.embed.reader import describe_embeddings
    from pipelines.index import backends
    from pipelines.index import pipeline as ip

    config = load_config("configs/local.yaml", sets)
    info = describe_embeddings(embeddings)
    plan = backends.plan_index(info.rows, info.dim, config.index)
    out = tempfile.mkdtemp(prefix="posters-index-profile-")
    try:
        pipeline = make_pipeline(config, runner_flags, save_main_session=False)
        _ = (pipeline | beam.Create(info.files)
             | ip.BuildShardedIndex(info, plan, config.index, os.path.join(out, "version"), time.time()))
        started = time.perf_counter()
        result = pipeline.run()
        result.wait_until_finish()
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    steps: collections.Counter = collections.Counter()
    for counter in result.monitoring_metrics().query()["counters"]:
        if counter.key.metric.name.endswith("total_msecs:v1"):
            steps[counter.key.step.replace("BuildShardedIndex/", "")] += counter.committed / 1000
    print(f"  Beam pipeline ({' '.join(runner_flags) or 'in_memory'}): wall {wall:.1f} s; per step (total_msecs):")
    for step, seconds in steps.most_common():
        if seconds >= 0.05:
            print(f"    {seconds:8.1f} s  {step}")
    return {"wall_s": wall, "steps": dict(steps)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.nightly_index_profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--embeddings", required=True, help="embeddings directory")
    parser.add_argument("--generate", type=int, default=0, help="first write this many generated vectors there")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help=f"config override (repeatable; default {' '.join(DEFAULT_SETS)} first)")
    parser.add_argument("--beam", action="store_true", help="also run the pipeline and print Beam's per-step times")
    parser.add_argument("--runner_flags", default="--direct_running_mode=multi_processing --direct_num_workers=2")
    args = parser.parse_args(argv)
    if args.generate:
        from pipelines.bench.scale import write_embeddings

        os.makedirs(args.embeddings, exist_ok=True)
        write_embeddings(args.embeddings, args.generate, args.dim)
    sets = [*DEFAULT_SETS, *args.set]
    profile_steps(args.embeddings, sets)
    if args.beam:
        beam_steps(args.embeddings, sets, args.runner_flags.split())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
