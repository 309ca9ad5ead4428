"""faiss mechanics behind the index pipeline and its loader: stable ids, the index choice by size, training,
adding a shard, exact search, merging shard results, recall, and (de)serialisation with a checksum.

Metric: inner product on L2-normalised vectors, i.e. cosine similarity — the angular metric the model is
trained with. Vectors that are not unit-norm are refused rather than silently normalised: they mean the
embeddings did not come from the exported model.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import faiss
import numpy as np

METRIC = faiss.METRIC_INNER_PRODUCT
METRIC_NAME = "inner_product"
UNIT_NORM_TOLERANCE = 1e-3
_ID_MASK = (1 << 63) - 1
REFINE_K_FACTOR = 4  # a refine index re-scores this many times k of its base index's candidates


class IndexBuildError(ValueError):
    """Input or settings the index cannot be built from; the message says what to change."""


# --- stable ids -------------------------------------------------------------------------------------------
def stable_id(title_id: str) -> int:
    """The title's faiss id: the first 8 bytes of sha256(title_id), big-endian, masked to 63 bits (never -1).

    A pure function of the title id, so ids do not change between runs, when files move or the catalog grows.
    """
    digest = hashlib.sha256(title_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _ID_MASK


def stable_ids(title_ids: Sequence[str]) -> np.ndarray:
    """`stable_id` of each title: the digests' first 8 bytes joined and read as big-endian int64, masked to
    63 bits (the same values, without a Python int per title)."""
    sha256 = hashlib.sha256
    prefixes = b"".join([sha256(t.encode("utf-8")).digest()[:8] for t in title_ids])
    return np.frombuffer(prefixes, ">i8").astype(np.int64) & _ID_MASK


def check_unique_ids(ids: np.ndarray, title_ids: Sequence[str]) -> None:
    """Refuses a title listed twice and two titles that hash to the same id (never silently merged)."""
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    def title(row):  # a list's str, or an Arrow array's scalar as str
        value = title_ids[int(row)]
        return value.as_py() if hasattr(value, "as_py") else value

    for position in repeated:
        first, second = title(order[position]), title(order[position + 1])
        if first == second:
            raise IndexBuildError(f"title_id {first!r} appears more than once in the embeddings")
        raise IndexBuildError(f"title_ids {first!r} and {second!r} hash to the same id {ids[order[position]]}; "
                              "rename one of them (a 63-bit collision: report it, it should never happen)")


def shard_of(ids: np.ndarray, num_shards: int) -> np.ndarray:
    """The shard holding each id: a function of the id alone, so a title stays in its shard across builds."""
    return (ids % num_shards).astype(np.int32)


def check_unit_norm(vectors: np.ndarray, title_ids: Sequence[str], tolerance: float = UNIT_NORM_TOLERANCE) -> None:
    norms = np.linalg.norm(vectors, axis=1)
    bad = np.flatnonzero(~(np.abs(norms - 1.0) <= tolerance))  # also catches NaN
    if bad.size:
        examples = ", ".join(f"{title_ids[i]!r} (norm {norms[i]:.4f})" for i in bad[:3])
        raise IndexBuildError(f"{bad.size} embeddings are not unit-norm, e.g. {examples}; the index uses inner "
                              "product on L2-normalised vectors — embed with the exported model, which normalises")


# --- the index choice -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexPlan:
    factory: str  # what index_factory builds (ids added with add_with_ids)
    nlist: Optional[int]  # inverted lists, None for a non-IVF index
    num_shards: int
    train_size: int  # vectors the empty index is trained on (0: needs no training)
    backend: str = "faiss"  # "scann": `nlist` is the tree's leaves per shard, `factory` a description


def default_nlist(n: int) -> int:
    """About 2·√n inverted lists, a power of two (1M vectors → 2048).

    Measured (`posters bench index`): at 1M, 2048 lists reach recall@10 ≥ 0.95 at the same queries/s as 4096
    (at twice the nprobe) and build about 3× faster, since k-means and assignment cost scale with nlist.
    """
    return max(1, 2 ** round(math.log2(max(1.0, 2 * math.sqrt(n)))))


def plan_index(n: int, dim: int, factory: Optional[str] = None, flat_max_vectors: int = 50_000,
               nlist: Optional[int] = None, num_shards: int = 0, vectors_per_shard: int = 500_000,
               train_sample_size: Optional[int] = None) -> IndexPlan:
    """Chooses the index for `n` vectors: exact `Flat` up to `flat_max_vectors`, else `IVF{nlist},Flat`.

    An explicit `factory` wins (a faiss index_factory string, e.g. "IVF4096_HNSW32,Flat" or "IVF4096,PQ32x8");
    ids need an id-aware index, so a non-IVF factory is wrapped in `IDMap2`.
    """
    if factory is None:
        if n <= flat_max_vectors:
            factory = "Flat"
        else:
            factory = f"IVF{nlist or default_nlist(n)},Flat"
    factory = _with_ids(factory, dim)
    probe = faiss.index_factory(dim, factory, METRIC)
    ivf = ivf_of(probe)
    lists = ivf.nlist if ivf is not None else None
    if probe.is_trained:
        train = 0
    else:
        train = train_sample_size or max(10_000, 64 * (lists or 1))
        train = min(train, n)
    shards = num_shards or max(1, math.ceil(n / vectors_per_shard))
    return IndexPlan(factory=factory, nlist=lists, num_shards=shards, train_size=train)


def _with_ids(factory: str, dim: int) -> str:
    """IVF indexes (also behind a transform such as OPQ or PCA) keep the ids they are given; others get IDMap2."""
    root = faiss.index_factory(dim, factory, METRIC)  # keeps the wrapped indexes alive while we look at them
    index = faiss.downcast_index(root)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return factory if isinstance(index, (faiss.IndexIVF, faiss.IndexIDMap, faiss.IndexIDMap2)) else f"IDMap2,{factory}"


def ivf_of(index: faiss.Index):
    """The IVF part of an index (inside IDMap, pre-transforms…), or None for an index without one."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


# --- building ---------------------------------------------------------------------------------------------
def train_empty_index(factory: str, dim: int, sample: np.ndarray, ef_construction: Optional[int] = None) -> faiss.Index:
    """An empty index of `factory`, trained (coarse quantiser, codebooks) on `sample` when it needs training;
    an HNSW graph gets `ef_construction` (faiss' default of 40 builds graphs that miss recall 0.95 here)."""
    index = faiss.index_factory(dim, factory, METRIC)
    hnsw = hnsw_of(index)
    if hnsw is not None and ef_construction:
        hnsw.hnsw.efConstruction = ef_construction  # kept by serialize: every shard's copy builds with it
    if not index.is_trained:
        ivf = ivf_of(index)
        if ivf is not None and len(sample) < ivf.nlist:
            raise IndexBuildError(f"{factory} has {ivf.nlist} inverted lists but only {len(sample)} training "
                                  "vectors; lower index.nlist or use a smaller factory")
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def add_to_shard(empty_index: bytes, ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    """A copy of the trained empty index holding `vectors` under `ids`."""
    index = deserialize(empty_index)
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, np.int64))
    return index


def hnsw_of(index: faiss.Index):
    """The HNSW graph index inside an index (IDMap2, pre-transforms…), or None for an index without one."""
    index = faiss.downcast_index(index)
    while isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
        index = faiss.downcast_index(index.index)
    return index if isinstance(index, faiss.IndexHNSW) else None


def search_parameter(index: faiss.Index) -> Optional[str]:
    """What the search breadth (`nprobe` in the manifest and config) sets: IVF lists or HNSW efSearch."""
    if ivf_of(index) is not None:
        return "nprobe"
    return "efSearch" if hnsw_of(index) is not None else None


def set_search_parameters(index: faiss.Index, nprobe: Optional[int]) -> None:
    """Sets nprobe on an IVF index (and a matching search depth on an HNSW coarse quantiser), or efSearch on
    an HNSW index; a refine step (`…,Refine(SQ8)`, `…,RFlat`) re-ranks REFINE_K_FACTOR × k candidates."""
    outer = faiss.downcast_index(index)
    while isinstance(outer, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        outer = faiss.downcast_index(outer.index)
    if isinstance(outer, faiss.IndexRefine):
        outer.k_factor = REFINE_K_FACTOR
    ivf = ivf_of(index)
    if ivf is None:
        hnsw = hnsw_of(index)
        if hnsw is not None and nprobe is not None:
            hnsw.hnsw.efSearch = nprobe
        return
    if nprobe is None:
        return
    ivf.nprobe = min(nprobe, ivf.nlist)
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = max(64, 2 * ivf.nprobe)


def nprobe_candidates(nprobe: int, nlist: Optional[int], tune: bool) -> list[Optional[int]]:
    """nprobe values to measure: the configured one and, when tuning, steps of about √2 up to nlist / 4.

    Beyond a quarter of the lists an IVF search reads a quarter of the catalog per query; exact search is
    then the better index, so tuning stops there and the recall gate decides.
    """
    if nlist is None:
        return [None]
    first = min(nprobe, nlist)
    limit = max(first, nlist // 4) if tune else first
    steps = (round(first * 2 ** (i / 2)) for i in range(2 * math.ceil(math.log2(limit / first)) + 1))
    return sorted({min(step, limit) for step in steps})


def ef_search_candidates(ef_search: int, tune: bool) -> list[int]:
    """HNSW efSearch values to measure: the configured one (at least 16) and, when tuning, steps of about √2
    up to 1024."""
    first = max(16, ef_search)
    if not tune or first >= 1024:
        return [first]
    return sorted({min(1024, round(first * 2 ** (i / 2))) for i in range(2 * math.ceil(math.log2(1024 / first)) + 1)})


def serialize(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes) -> faiss.Index:
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- searching and measuring ------------------------------------------------------------------------------
def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores descending, ids; -1 where fewer than k exist) of one index."""
    if index.ntotal == 0:
        return _empty_results(len(queries), k)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def exact_search(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product, as ids (not row numbers)."""
    if len(vectors) == 0:
        return _empty_results(len(queries), k)
    scores, rows = faiss.knn(np.ascontiguousarray(queries, np.float32), np.ascontiguousarray(vectors, np.float32),
                             min(k, len(vectors)), metric=METRIC)
    found = np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)
    if found.shape[1] < k:
        empty_scores, empty_ids = _empty_results(len(queries), k - found.shape[1])
        scores, found = np.hstack([scores, empty_scores]), np.hstack([found, empty_ids])
    return scores, found


def merge_results(results: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merges per-shard top-k lists (each sorted by descending score) into one top-k per query."""
    scores = np.stack([np.asarray(r[0], np.float32)[:, :k] for r in results])
    ids = np.stack([np.asarray(r[1], np.int64)[:, :k] for r in results])
    return faiss.merge_knn_results(np.ascontiguousarray(scores), np.ascontiguousarray(ids), keep_max=True)


def without_self(ids: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    """The first k ids of each row other than the query's own id (queries that are catalog items)."""
    kept = np.full((len(ids), k), -1, dtype=np.int64)
    for row, (found, own) in enumerate(zip(ids, query_ids)):
        others = found[found != own][:k]
        kept[row, :len(others)] = others
    return kept


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (ids; -1 entries ignored)."""
    hits, total = 0, 0
    for approx, exact in zip(approx_ids[:, :k], exact_ids[:, :k]):
        truth = set(exact[exact >= 0].tolist())
        hits += len(truth & set(approx.tolist()))
        total += len(truth)
    return hits / total if total else 1.0


def _empty_results(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((m, k), -np.finfo(np.float32).max, np.float32), np.full((m, k), -1, np.int64)
