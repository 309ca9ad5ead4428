"""The two index backends behind one sharded index, `index.backend: faiss | scann`: what differs between them
when a shard is planned, built, written, searched and read back. faiss covers every index_factory string
(exact `Flat`, `IVF…`, `HNSW32,Flat`, compressed ones); ScaNN is `pipelines.index.scann_index`.

Both shard the same way (id mod S), answer `search(queries, k) → (scores, int64 ids)` per shard and are tuned by
one search breadth, the manifest's `nprobe`: IVF lists probed (faiss IVF), `efSearch` (faiss HNSW) or
`leaves_to_search` (ScaNN), named by the manifest's `search_parameter`.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import faiss
import numpy as np

from pipelines.config import IndexConfig
from pipelines.index import faiss_index as vi
from pipelines.index import scann_index as si

BACKENDS = ("faiss", "scann")


def plan_index(n: int, dim: int, settings: IndexConfig) -> vi.IndexPlan:
    """The index `posters index` builds for `n` vectors under these settings."""
    if settings.backend == "faiss":
        return vi.plan_index(n, dim, settings.factory, settings.flat_max_vectors, settings.nlist,
                             settings.num_shards, settings.vectors_per_shard, settings.train_sample_size)
    shards = settings.num_shards or max(1, math.ceil(n / settings.vectors_per_shard))
    leaves = settings.scann_num_leaves or si.default_num_leaves(math.ceil(n / shards))
    description = (f"ScaNN tree{leaves},AH{settings.scann_dims_per_block}"
                   f"(threshold {settings.scann_anisotropic_threshold}),reorder{settings.scann_reorder}")
    return vi.IndexPlan(factory=description, nlist=leaves, num_shards=shards, train_size=0, backend="scann")


def search_parameter(plan: vi.IndexPlan, dim: int) -> Optional[str]:
    """What the breadth sets: "nprobe" (IVF), "efSearch" (HNSW), "leaves_to_search" (ScaNN), None (exact)."""
    if plan.backend == "scann":
        return "leaves_to_search"
    return vi.search_parameter(faiss.index_factory(dim, plan.factory, vi.METRIC))


def search_candidates(plan: vi.IndexPlan, settings: IndexConfig, dim: int) -> list[Optional[int]]:
    """Breadth values the build measures recall at (the smallest that passes the gate is published)."""
    parameter = search_parameter(plan, dim)
    if parameter == "efSearch":
        return vi.ef_search_candidates(settings.nprobe, settings.tune_nprobe)
    if parameter is None:
        return [None]
    return vi.nprobe_candidates(settings.nprobe, plan.nlist, settings.tune_nprobe)


def train_empty(plan: vi.IndexPlan, dim: int, sample: np.ndarray, settings: IndexConfig) -> bytes:
    """The trained empty index every shard starts from (faiss); ScaNN trains each shard's tree on its own
    vectors, so it has none (b"")."""
    if plan.backend == "scann":
        return b""
    return vi.serialize(vi.train_empty_index(plan.factory, dim, sample, settings.hnsw_ef_construction))


def scann_settings(settings: IndexConfig) -> si.ScannSettings:
    return si.ScannSettings(num_leaves=settings.scann_num_leaves, dims_per_block=settings.scann_dims_per_block,
                            anisotropic_threshold=settings.scann_anisotropic_threshold,
                            reorder=settings.scann_reorder, training_sample_size=settings.train_sample_size)


def add_to_shard(plan: vi.IndexPlan, empty_index: bytes, ids: np.ndarray, vectors: np.ndarray,
                 settings: IndexConfig, dim: int):
    """One shard's index holding `vectors` under `ids`."""
    if plan.backend == "scann":
        return si.build_shard(ids, vectors, 10, replace(scann_settings(settings), num_leaves=plan.nlist), dim)
    return vi.add_to_shard(empty_index, ids, vectors)


def serialize(index) -> bytes:
    return si.serialize(index) if isinstance(index, si.ScannShard) else vi.serialize(index)


def set_breadth(index, breadth: Optional[int]) -> None:
    """Sets the search breadth of one shard (nprobe, efSearch or leaves_to_search)."""
    if isinstance(index, si.ScannShard):
        index.leaves_to_search = breadth
    else:
        vi.set_search_parameters(index, breadth)


def manifest_fields(plan: vi.IndexPlan, settings: IndexConfig, dim: int) -> dict:
    """What the manifest records of the backend (the loader checks `backend` before reading a shard)."""
    fields = {"backend": plan.backend, "search_parameter": search_parameter(plan, dim)}
    if plan.backend == "scann":
        fields["scann"] = {"version": si.SCANN_VERSION, **scann_settings(settings).__dict__, "num_leaves": plan.nlist}
    return fields
