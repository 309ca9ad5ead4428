"""`posters bench index`: every index backend and setting side by side at one size, in one run — exact search
(the reference), faiss IVF-Flat at several nprobe, the 10M and 100M factories of docs/scaling.md (`IVF…,SQ8`,
`OPQ32,IVF…,PQ32x8,Refine(SQ8)`, their lists scaled to the catalog), faiss HNSW32 at several efSearch, ScaNN at
several leaves_to_search — on the same clustered synthetic vectors with held-out queries.

    posters bench index --n 1000000 --json bench_out/index.json
    posters bench index --n 2000 --queries 100 --all-titles 2000 --nprobe 1,16 --ef-search 16 --leaves 1,8

Each row (index, breadth): build seconds, the build's peak RSS (and its growth over the vectors the bench
holds), batched queries/s (and per CPU-second) and recall@10 against exact search. Then, per index and recall
target (≥ 0.95, ≥ 0.98), the fastest row that reaches it and the seconds to search every title for its top-11
(the nightly's item→item), measured on `--all-titles` titles and scaled to n when fewer. Every index is built
with the functions `posters index` uses (`backends.plan_index`, a trained empty index, `add_to_shard` per
shard) and searched through the `ShardedIndex` the loader returns; each search is the best of `--repeat`.
A backend that is not installed (ScaNN is the `scann` extra) is skipped with its reason printed.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass
from typing import Optional

import faiss
import numpy as np

from pipelines.common import storage
from pipelines.common.phase_memory import process_memory_mb, reset_peak_memory
from pipelines.config import IndexConfig
from pipelines.index import backends
from pipelines.index import faiss_index as vi
from pipelines.index import scann_index as si
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


def resident_memory_mb() -> float:
    """The process's resident set now (Linux: VmRSS), what a build's peak is compared with."""
    return process_memory_mb(("VmRSS",))["VmRSS"]


def peak_memory_mb() -> float:
    """The process's peak resident set since `reset_peak_memory` (VmHWM; elsewhere the lifetime maximum)."""
    return process_memory_mb(("VmHWM",))["VmHWM"] or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_index(vectors: np.ndarray, title_ids: list[str], plan: vi.IndexPlan, seed: int = 0,
                settings: Optional[IndexConfig] = None) -> ShardedIndex:
    """The pipeline's build, in one process: train on a sample, add each shard to a copy, search them together."""
    settings = settings or IndexConfig()
    dim = vectors.shape[1]
    ids = vi.stable_ids(title_ids)
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(len(vectors), plan.train_size, replace=False)] if plan.train_size else vectors[:0]
    empty = backends.train_empty(plan, dim, sample, settings)
    shard_of = vi.shard_of(ids, plan.num_shards)
    shards = []
    for shard in range(plan.num_shards):
        rows = np.flatnonzero(shard_of == shard)
        shards.append(backends.add_to_shard(plan, empty, ids[rows], vectors[rows], settings, dim))
    order = np.argsort(ids)
    manifest = {"version": "bench", "model_version": "bench", "dim": dim, "nprobe": None, "factory": plan.factory,
                "backend": plan.backend}
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


@dataclass(frozen=True)
class Setting:
    """One index to build and the breadths to search it at."""
    label: str
    settings: IndexConfig
    breadths: tuple


def default_settings(n: int, nprobes, ef_searches, leaves, extra_factories=()) -> list[Setting]:
    """IVF-Flat (what `posters index` chooses at n), the 10M and 100M factories with lists scaled to n, HNSW32,
    ScaNN, and any extra faiss factories."""
    nlist = vi.default_nlist(n)
    flat_max = min(50_000, n // 2 or 1)  # so that the default choice is an IVF index even at a test's size

    def faiss_point(label, factory, breadths):
        return Setting(label, IndexConfig(factory=factory, flat_max_vectors=flat_max), tuple(breadths))

    return [faiss_point("IVF-Flat (default choice)", None, nprobes),
            Setting("ScaNN tree + AH2 + reorder 100", IndexConfig(backend="scann"), tuple(leaves)),
            faiss_point("HNSW32 (efConstruction 80)", "HNSW32,Flat", ef_searches),
            faiss_point("10M factory: IVF,SQ8", f"IVF{nlist},SQ8", nprobes),
            faiss_point("100M factory: OPQ+PQ, refine SQ8", f"OPQ32,IVF{nlist},PQ32x8,Refine(SQ8)", nprobes),
            *(faiss_point(factory, factory, nprobes) for factory in extra_factories)]


def all_titles_seconds(index: ShardedIndex, vectors: np.ndarray, count: int, batch: int = 8192) -> float:
    """Seconds to search the first `count` titles' own vectors for their top-11 (themselves included), batched."""
    started = time.perf_counter()
    for first in range(0, count, batch):
        index.search_ids(np.ascontiguousarray(vectors[first:first + batch]), K + 1)
    return time.perf_counter() - started


def bench(n: int, points: list[Setting], queries: int = 1000, dim: int = 128, seed: int = 0, repeat: int = 3,
          all_titles: Optional[int] = None, targets=(0.95, 0.98)) -> tuple[list[dict], list[dict]]:
    """(rows for exact search and each setting × breadth, the best row per setting and recall target)."""
    data = clustered_unit_vectors(n + queries, dim, seed)
    base, held_out = data[:n], data[n:]
    del data
    title_ids = [f"t{i:08d}" for i in range(n)]
    all_titles = min(n, all_titles or n)
    rows, best = [], []
    held = resident_memory_mb()
    reset_peak_memory()
    started = time.perf_counter()
    exact = build_index(base, title_ids, vi.plan_index(n, dim, "Flat", num_shards=1))
    build_s, peak = time.perf_counter() - started, peak_memory_mb()
    exact_qps, exact_cpu_qps, truth = timed_search(exact, held_out, repeat)
    baseline = (exact_qps, exact_cpu_qps)
    rows.append(_row("Flat (exact)", "faiss", n, None, None, baseline, 1.0, build_s, peak, held, baseline))
    _print(rows[-1])
    sample = min(all_titles, 1000)  # exact search is the slowest by far: a sample is enough to scale
    seconds = all_titles_seconds(exact, base, sample)
    best.append({**rows[-1], "target": 1.0, "all_titles": sample, "all_titles_s": seconds * n / sample})
    del exact
    for point in points:
        if point.settings.backend == "scann" and (reason := si.unavailable_reason()):
            print(f"{point.label}: skipped — {reason}", flush=True)
            continue
        plan = backends.plan_index(n, dim, point.settings)
        parameter = backends.search_parameter(plan, dim)
        held = resident_memory_mb()
        reset_peak_memory()
        started = time.perf_counter()
        index = build_index(base, title_ids, plan, seed, point.settings)
        build_s, peak = time.perf_counter() - started, peak_memory_mb()
        name = f"{point.label}: {plan.factory} ×{plan.num_shards} shards"
        point_rows = []
        for breadth in (point.breadths if parameter else [None]):
            if parameter in ("nprobe", "leaves_to_search") and breadth > plan.nlist:
                continue
            index.set_nprobe(breadth)
            qps, cpu_qps, found = timed_search(index, held_out, repeat)
            point_rows.append(_row(name, plan.backend, n, parameter, breadth, (qps, cpu_qps), recall(found, truth),
                                   build_s, peak, held, baseline))
            _print(point_rows[-1])
        rows += point_rows
        for target in targets:
            passing = [row for row in point_rows if row["recall_at_10"] >= target]
            if not passing:
                print(f"{name}: no setting reaches recall@10 {target}", flush=True)
                continue
            chosen = max(passing, key=lambda row: row["qps"])
            index.set_nprobe(chosen["breadth"])
            seconds = all_titles_seconds(index, base, all_titles)
            best.append({**chosen, "target": target, "all_titles": all_titles,
                         "all_titles_s": seconds * n / all_titles})
            _print_best(best[-1])
        del index
    return rows, best


def _row(index: str, backend: str, n: int, parameter, breadth, qps: tuple[float, float], recall_at_10: float,
         build_s: float, peak: float, held: float, exact: tuple[float, float]) -> dict:
    return {"index": index, "backend": backend, "n": n, "parameter": parameter, "breadth": breadth,
            "nprobe": breadth if parameter == "nprobe" else None,
            "qps": round(qps[0], 1), "recall_at_10": round(recall_at_10, 4), "build_s": round(build_s, 2),
            "peak_rss_mb": round(peak, 1), "peak_over_vectors_mb": round(max(0.0, peak - held), 1),
            "speedup": round(qps[0] / exact[0], 1), "cpu_qps": round(qps[1], 1),
            "cpu_speedup": round(qps[1] / exact[1], 1), "threads": faiss.omp_get_max_threads()}


def _setting(row: dict) -> str:
    return f"{row['parameter']}={row['breadth']}" if row["parameter"] else "–"


def _print(row: dict) -> None:
    print(f"{row['index']:<70} {_setting(row):<22} qps={row['qps']:<9} ×{row['speedup']:<6} "
          f"(per CPU-s ×{row['cpu_speedup']:<6}) recall@10={row['recall_at_10']:.3f} build={row['build_s']:.1f}s "
          f"peak={row['peak_rss_mb']:.0f}MB (+{row['peak_over_vectors_mb']:.0f})", flush=True)


def _print_best(row: dict) -> None:
    scaled = "" if row["all_titles"] == row["n"] else f" (measured on {row['all_titles']:,}, scaled to n)"
    print(f"  recall ≥ {row['target']}: {_setting(row)} recall@10={row['recall_at_10']:.3f} qps={row['qps']} "
          f"all-titles={row['all_titles_s']:.1f}s{scaled}", flush=True)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| index | setting | queries/s | × exact | queries/CPU-s | × exact | recall@10 | build s | peak MB | "
             "+MB over vectors |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['index']} | {_setting(r)} | {r['qps']:,.0f} | {r['speedup']} | {r['cpu_qps']:,.0f} | "
              f"{r['cpu_speedup']} | {r['recall_at_10']:.3f} | {r['build_s']:.1f} | {r['peak_rss_mb']:,.0f} | "
              f"{r['peak_over_vectors_mb']:,.0f} |" for r in rows]
    return "\n".join(lines)


def best_table(best: list[dict]) -> str:
    lines = ["| recall@10 target | index | setting | recall@10 | queries/s | build s | peak MB | all titles s |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {'reference' if b['target'] == 1.0 else '≥ ' + str(b['target'])} | {b['index']} | {_setting(b)} | "
              f"{b['recall_at_10']:.3f} | {b['qps']:,.0f} | {b['build_s']:.1f} | {b['peak_rss_mb']:,.0f} | "
              f"{b['all_titles_s']:,.1f}{'' if b['all_titles'] == b['n'] else ' *'} |"
              for b in sorted(best, key=lambda b: (-b["target"] if b["target"] == 1.0 else b["target"],
                                                   b["all_titles_s"]))]
    return "\n".join(lines)


def winners(best: list[dict], target: float = 0.95) -> dict:
    """The fastest row at the target by all-titles seconds and by queries/s."""
    at = [b for b in best if b["target"] == target]
    if not at:
        return {}
    return {"all_titles": min(at, key=lambda b: b["all_titles_s"]), "qps": max(at, key=lambda b: b["qps"])}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posters bench index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="catalog size (default %(default)s)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--factory", action="append", default=[], help="also bench this faiss factory (repeatable)")
    parser.add_argument("--nprobe", default="4,6,8,12,16,24,32", help="IVF nprobe values (comma-separated)")
    parser.add_argument("--ef-search", default="32,64,128,256", help="HNSW efSearch values")
    parser.add_argument("--leaves", default="8,16,24,32,48,64", help="ScaNN leaves_to_search values")
    parser.add_argument("--only", action="append", default=[],
                        help="bench only the settings whose label contains this (repeatable; exact always runs)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries (default %(default)s)")
    parser.add_argument("--all-titles", type=int, help="titles searched for the all-titles seconds (default: n)")
    parser.add_argument("--repeat", type=int, default=3, help="searches per row; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows here as JSON")
    args = parser.parse_args(argv)
    points = default_settings(args.n, _ints(args.nprobe), _ints(args.ef_search), _ints(args.leaves), args.factory)
    if args.only:
        points = [p for p in points if any(word.lower() in p.label.lower() for word in args.only)]
    rows, best = bench(args.n, points, args.queries, args.dim, seed=args.seed, repeat=args.repeat,
                       all_titles=args.all_titles)
    print()
    print(markdown_table(rows))
    print()
    print(best_table(best))
    if any(b["all_titles"] != b["n"] for b in best):
        print("\n* all-titles seconds measured on fewer titles (see above) and scaled to n")
    win = winners(best)
    if win:
        print(f"\nat recall@10 ≥ 0.95: fewest all-titles seconds: {win['all_titles']['index']} "
              f"{_setting(win['all_titles'])}; most queries/s: {win['qps']['index']} {_setting(win['qps'])}")
    if args.json:
        storage.write_bytes(args.json, json.dumps({"rows": rows, "best": best}, indent=2).encode("utf-8"))
        print(f"\nwrote {len(rows)} rows to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
