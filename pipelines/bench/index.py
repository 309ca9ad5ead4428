"""`posters bench index`: build time, peak memory, queries/s and recall@10 of exact search and of the index
the pipeline builds, on the same clustered synthetic vectors with held-out queries.

    posters bench index --n 100000 --json bench_out/index.json
    posters bench index --n 1000000 --factory IVF4096_HNSW32,Flat    # compare another factory too

One row per configuration: `index, n, nprobe, qps, recall_at_10, build_s, peak_rss_mb, speedup` (speedup:
queries/s over exact search's), plus `cpu_qps` / `cpu_speedup` (the same per CPU-second). Queries are
searched as one batch with every core faiss sees, through the same `ShardedIndex` the loader returns, so the
numbers are what a user of the published index gets; each is the best of `--repeat` runs, since other work
on the machine can only slow a run down. The index is built with the same functions and defaults as
`posters index` (`plan_index`, a trained empty index, `add_to_shard` per shard).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Optional

import faiss
import numpy as np

from pipelines.common import storage
from pipelines.config import IndexConfig
from pipelines.index import faiss_index as vi
from pipelines.index.loader import ShardedIndex

K = 10


def clustered_unit_vectors(n: int, dim: int = 128, seed: int = 0, clusters: Optional[int] = None,
                           intrinsic_dim: int = 24) -> np.ndarray:
    """Unit vectors in clusters, a stand-in for poster embeddings: float32 [n, dim], shuffled.

    `clusters` (default n/1000, at least 16) centres uniform on the sphere, lognormal cluster sizes; each
    cluster spreads in its own random `intrinsic_dim`-dimensional subspace (learned embeddings have a low
    intrinsic dimension; isotropic 128-d noise would make every neighbour nearly equidistant) with a spread
    that differs between clusters, plus a little isotropic noise.
    """
    rng = np.random.default_rng(seed)
    clusters = clusters or max(16, n // 1000)
    centres = _unit(rng.standard_normal((clusters, dim), dtype=np.float32))
    sizes = rng.multinomial(n, _normalised(rng.lognormal(0.0, 1.0, clusters)))
    spreads = rng.uniform(0.06, 0.12, clusters) * np.sqrt(dim / intrinsic_dim)
    vectors = np.empty((n, dim), np.float32)
    start = 0
    for centre, size, spread in zip(centres, sizes, spreads):
        basis = np.linalg.qr(rng.standard_normal((dim, intrinsic_dim)))[0].T.astype(np.float32)
        offsets = rng.standard_normal((size, intrinsic_dim), dtype=np.float32) @ basis
        vectors[start:start + size] = centre + spread * offsets
        start += size
    vectors += 0.02 * rng.standard_normal((n, dim), dtype=np.float32)
    return _unit(vectors[rng.permutation(n)])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _normalised(w: np.ndarray) -> np.ndarray:
    return w / w.sum()


def reset_peak_memory() -> None:
    """Resets the process's peak resident set (Linux: VmHWM), so each stage reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_memory_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_index(vectors: np.ndarray, title_ids: list[str], plan: vi.IndexPlan, seed: int = 0) -> ShardedIndex:
    """The pipeline's build, in one process: train on a sample, add each shard to a copy, search them together."""
    ids = vi.stable_ids(title_ids)
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(len(vectors), plan.train_size, replace=False)] if plan.train_size else vectors[:0]
    empty = vi.serialize(vi.train_empty_index(plan.factory, vectors.shape[1], sample))
    shard_of = vi.shard_of(ids, plan.num_shards)
    shards = []
    for shard in range(plan.num_shards):
        rows = np.flatnonzero(shard_of == shard)
        shards.append(vi.add_to_shard(empty, ids[rows], vectors[rows]))
    order = np.argsort(ids)
    manifest = {"version": "bench", "model_version": "bench", "dim": vectors.shape[1], "nprobe": None,
                "factory": plan.factory}
    return ShardedIndex("memory", manifest, shards, ids[order], np.asarray(title_ids, dtype=object)[order],
                        shard_of[order])


def timed_search(index: ShardedIndex, queries: np.ndarray, repeat: int = 3) -> tuple[float, float, list[list[str]]]:
    """(queries/s, queries per CPU-second, results) of one batched search, each the best of `repeat` runs.

    Other work on the machine only slows a run down; CPU seconds are what the search itself used, so
    `cpu_qps` compares configurations fairly even on a busy machine.
    """
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        found, _ = index.search(queries, K)
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    return len(queries) / best_wall, len(queries) / best_cpu, found


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def bench(n: int, factories: list[Optional[str]], nprobes: list[int], queries: int = 1000, dim: int = 128,
          seed: int = 0, settings: Optional[IndexConfig] = None, repeat: int = 3) -> list[dict]:
    """Rows for exact search and each factory (None: what `posters index` chooses) at each nprobe."""
    settings = settings or IndexConfig()
    data = clustered_unit_vectors(n + queries, dim, seed)
    base, held_out = data[:n], data[n:]
    title_ids = [f"t{i:08d}" for i in range(n)]
    rows = []
    reset_peak_memory()
    started = time.perf_counter()
    exact = build_index(base, title_ids, vi.plan_index(n, dim, "Flat", num_shards=1))
    build_s, peak = time.perf_counter() - started, peak_memory_mb()
    exact_qps, exact_cpu_qps, truth = timed_search(exact, held_out, repeat)
    baseline = (exact_qps, exact_cpu_qps)
    rows.append(_row("Flat (exact)", n, None, (exact_qps, exact_cpu_qps), 1.0, build_s, peak, baseline))
    _print(rows[-1])
    del exact
    for factory in factories:
        plan = vi.plan_index(n, dim, factory, settings.flat_max_vectors, settings.nlist, settings.num_shards,
                             settings.vectors_per_shard, settings.train_sample_size)
        reset_peak_memory()
        started = time.perf_counter()
        index = build_index(base, title_ids, plan, seed)
        build_s, peak = time.perf_counter() - started, peak_memory_mb()
        name = f"{plan.factory} ×{plan.num_shards} shards"
        for nprobe in (nprobes if plan.nlist else [None]):
            if nprobe is not None and nprobe > plan.nlist:
                continue
            index.set_nprobe(nprobe)
            qps, cpu_qps, found = timed_search(index, held_out, repeat)
            rows.append(_row(name, n, nprobe, (qps, cpu_qps), recall(found, truth), build_s, peak, baseline))
            _print(rows[-1])
    return rows


def _row(index: str, n: int, nprobe, qps: tuple[float, float], recall_at_10: float, build_s: float, peak: float,
         exact: tuple[float, float]) -> dict:
    return {"index": index, "n": n, "nprobe": nprobe, "qps": round(qps[0], 1), "recall_at_10": round(recall_at_10, 4),
            "build_s": round(build_s, 2), "peak_rss_mb": round(peak, 1), "speedup": round(qps[0] / exact[0], 1),
            "cpu_qps": round(qps[1], 1), "cpu_speedup": round(qps[1] / exact[1], 1),
            "threads": faiss.omp_get_max_threads()}


def _print(row: dict) -> None:
    print(f"{row['index']:<28} n={row['n']:<8} nprobe={str(row['nprobe']):<5} qps={row['qps']:<9} "
          f"×{row['speedup']:<6} (per CPU-s ×{row['cpu_speedup']:<6}) recall@10={row['recall_at_10']:.3f} "
          f"build={row['build_s']:.1f}s "
          f"peak={row['peak_rss_mb']:.0f}MB", flush=True)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| index | n | nprobe | queries/s | × exact | queries/CPU-s | × exact | recall@10 | build s | peak MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['index']} | {r['n']:,} | {r['nprobe'] or '–'} | {r['qps']:,.0f} | {r['speedup']} | "
              f"{r['cpu_qps']:,.0f} | {r['cpu_speedup']} | {r['recall_at_10']:.3f} | {r['build_s']:.1f} | "
              f"{r['peak_rss_mb']:,.0f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posters bench index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, action="append", help="catalog size (repeatable; default 100000)")
    parser.add_argument("--factory", action="append", default=[],
                        help="also bench this faiss factory string (repeatable); the default choice is always run")
    parser.add_argument("--nprobe", default="1,4,8,11,16,23,32,64", help="comma-separated nprobe values")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="searches per row; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows here as JSON")
    args = parser.parse_args(argv)
    nprobes = [int(v) for v in args.nprobe.split(",") if v]
    rows = []
    for n in args.n or [100_000]:
        rows += bench(n, [None, *args.factory], nprobes, args.queries, seed=args.seed, repeat=args.repeat)
    print()
    print(markdown_table(rows))
    if args.json:
        storage.write_bytes(args.json, json.dumps(rows, indent=2).encode("utf-8"))
        print(f"\nwrote {len(rows)} rows to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
