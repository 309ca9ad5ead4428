"""User queries from the watched titles' vectors as the index stores them: no shuffle of the embeddings.

    watch events ──▶ GroupByKey(user) ──▶ BuildUserQueryFromIndex ──▶ UserQuery / Skip

The join of every watch with its title's embedding (`watch_history.UserQueries`) puts every embedding of the
catalog through a shuffle, which grows with the catalog whatever the history's size. Where the index stores the
vectors exactly (IVF-Flat; Flat and HNSW-Flat behind `IDMap2`: `stores_exact_vectors`), a watched title's vector
is read from the machine's memory-mapped index instead: the history is grouped by user alone, and each user's
watched titles are looked up there (`IndexedVectors`). The vector read is the one indexed, byte for byte the
embedding the index was built from, so the queries are those of the join. A watched title the index does not
hold counts as not embedded, as in the join.

Per process: for an IVF index, a table of every indexed id and where it sits (list, offset) — 16 bytes a title,
beside the id map's ~26 — built once from the mapped lists' ids; for `IDMap2` indexes faiss' own id map.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional

import apache_beam as beam
import faiss
import numpy as np
from apache_beam.metrics.metric import Metrics
from apache_beam.utils import shared

from pipelines.candidates.watch_history import SKIPPED_TAG, Skip, WatchEvent, user_query
from pipelines.index import faiss_index as vi

METRICS_NAMESPACE = "watch_history"


def _exact_storage(index) -> Optional[str]:
    """"ivf" or "idmap" when an index (as built, `IDMap2` included) returns its vectors exactly, else None."""
    outer = faiss.downcast_index(index)  # `index` keeps the C++ object alive while its views are looked at
    if isinstance(outer, faiss.IndexIVFFlat):
        return "ivf"
    inner = faiss.downcast_index(outer.index) if isinstance(outer, faiss.IndexIDMap2) else outer
    return "idmap" if isinstance(inner, (faiss.IndexFlat, faiss.IndexHNSWFlat)) else None


def stores_exact_vectors(manifest: dict) -> bool:
    """Whether the index a manifest describes gives back its vectors exactly (see `_exact_storage`)."""
    if manifest.get("backend", "faiss") != "faiss":
        return False
    empty = faiss.index_factory(manifest["dim"], manifest["factory"], vi.METRIC)
    return _exact_storage(empty) is not None


class IndexedVectors:
    """The vectors of titles in a loaded index (`pipelines.index.loader.ShardedIndex`), read from its shards."""

    def __init__(self, index):
        self._index, self._shards = index, [faiss.downcast_index(shard) for shard in index.shards]
        kinds = {_exact_storage(shard) for shard in self._shards}
        if len(kinds) != 1 or None in kinds:
            raise ValueError(f"index {index.uri}: its shards do not store their vectors exactly")
        self._kind = kinds.pop()
        if self._kind == "ivf":
            self._ids, self._places = _list_places(self._shards)

    def vectors(self, title_ids: Sequence[str]) -> list[Optional[np.ndarray]]:
        """Each title's indexed vector (float32 [dim]), None for a title the index does not hold."""
        held = [title_id in self._index for title_id in title_ids]
        ids = vi.stable_ids(title_ids)
        if self._kind == "idmap":
            shards = vi.shard_of(ids, len(self._shards))
            return [self._shards[s].reconstruct(int(i)) if ok else None for ok, i, s in zip(held, ids, shards)]
        rows = np.searchsorted(self._ids, ids)
        found = []
        for ok, row in zip(held, rows):
            if not ok:
                found.append(None)
                continue
            shard, list_no, offset = (int(v) for v in self._places[row])
            vector = np.empty(self._shards[shard].d, np.float32)
            self._shards[shard].reconstruct_from_offset(list_no, offset, faiss.swig_ptr(vector))
            found.append(vector)
        return found


def _list_places(ivfs: list) -> tuple[np.ndarray, np.ndarray]:
    """(every id, sorted; its (shard, list, offset) int32 [n, 3]) from the inverted lists' ids."""
    ids, places = [], []
    for shard, ivf in enumerate(ivfs):
        invlists = ivf.invlists
        for list_no in range(ivf.nlist):
            size = invlists.list_size(list_no)
            if not size:
                continue
            list_ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy()
            ids.append(list_ids)
            places.append(np.column_stack([np.full(size, shard, np.int32), np.full(size, list_no, np.int32),
                                           np.arange(size, dtype=np.int32)]))
    if not ids:
        return np.empty(0, np.int64), np.empty((0, 3), np.int32)
    ids, places = np.concatenate(ids), np.concatenate(places)
    order = np.argsort(ids, kind="stable")
    return ids[order], places[order]


class BuildUserQueryFromIndex(beam.DoFn):
    """(user_id, their `WatchEvent`s) → `UserQuery`, or a `Skip` on the `skipped` output, with the watched
    titles' vectors read from the machine's memory-mapped index."""

    def __init__(self, index_handle, vectors_handle, index_uri: str, model_version: str,
                 faiss_threads: Optional[int], half_life_days: Optional[float]):
        self._shared, self._vectors_handle = index_handle, vectors_handle
        self._index_uri, self._model_version = index_uri, model_version
        self._faiss_threads, self._half_life_days = faiss_threads, half_life_days
        self._copy = self._vectors = None

    def setup(self):
        from pipelines.candidates.index_copy import open_index

        self._copy, index = open_index(self._shared, self._index_uri, self._model_version, self._faiss_threads)
        self._vectors = self._vectors_handle.acquire(lambda: IndexedVectors(index), tag=index.uri)

    def process(self, keyed: tuple[str, Iterable[WatchEvent]]):
        user_id, events = keyed[0], list(keyed[1])
        titles = sorted({event.title_id for event in events})
        by_title = dict(zip(titles, self._vectors.vectors(titles)))
        without = sum(by_title[event.title_id] is None for event in events)
        if without:
            Metrics.counter(METRICS_NAMESPACE, "watches_without_embedding").inc(without)
        result = user_query(user_id, [(event, by_title[event.title_id]) for event in events], self._half_life_days)
        yield beam.pvalue.TaggedOutput(SKIPPED_TAG, result) if isinstance(result, Skip) else result


class UserQueriesFromIndex(beam.PTransform):
    """`WatchEvent`s → `UserQuery`s; users without one on `skipped` (like `watch_history.UserQueries`)."""

    def __init__(self, plan, index_handle):
        super().__init__()
        self._plan, self._index_handle = plan, index_handle

    def expand(self, events):
        plan = self._plan
        return (events
                | "KeyWatchByUser" >> beam.Map(lambda event: (event.user_id, event))
                | "GroupWatchesByUser" >> beam.GroupByKey()
                | "BuildUserQuery" >> beam.ParDo(BuildUserQueryFromIndex(
                    self._index_handle, shared.Shared(), plan.index_uri, plan.model_version, plan.faiss_threads,
                    plan.recency_half_life_days)).with_outputs(SKIPPED_TAG, main="queries"))
