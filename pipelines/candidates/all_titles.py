"""Item→item for every title in one pass over the inverted lists: faiss' `big_batch_search`, split across Beam.

    index quantiser ──▶ GroupListsByProximity ──▶ each list's group (a side input of nlist ints, read by every step)
    (shard, group) sources ──▶ RouteSources ──▶ GroupByKey(probed group) ──▶ ScanListGroup ──┐ results from other
    (home scan: thresholds)                                                                    │ groups that beat
    list groups ──────────────────────────────────────────────────────────▶ CoGroupByKey(home group) ◀──┘ a threshold
                                                                                   └─▶ ScanHomeGroup (home scan again)

Searching every title one query at a time reads each inverted list once per query that probes it. faiss'
`big_batch_search` (`faiss.contrib.big_batch_search`) turns that around: it assigns all queries to their
`nprobe` lists with the shared coarse quantiser, then reads each list once and scores every query that probes
it against the list's vectors. Here the same algorithm is split over Beam elements so that no process holds all
queries. A title's query is its own vector, which an IVF-Flat index holds exactly (the embedding it was built
from), so the titles are read from the index itself. The lists are first put in *groups* of at most
`lists_per_group` lists whose centroids lie close together (`group_lists_by_proximity`: a k-means of the
quantiser's centroids, computed once per run); since a title's `nprobe` lists are the ones nearest to it, most
of them fall in its own list's group (grouped by list number they fell in about `nprobe` different groups). A
*source* (a shard's lists of one group) is assigned to its lists (`route_source`) and first scored against its
own group's lists (in every shard), which gives each title a *threshold*: its (k+1)-th best score there
(`home_thresholds`). The source is then sent, per *other* group its titles probe, through a `GroupByKey` — as
each title's row in the source, its threshold and which of the group's lists it probes (about 10 bytes a probe),
not vectors; one element of that shuffle is a list group with the queries that probe it (at most about
`candidates.all_titles_queries_per_group`, whatever the catalog's size). The group reads its queries' vectors
and its lists from the machine's memory-mapped index and scores them list by list with faiss' own
`BlockComputer` and `ResultHeap` (`scan_list_group`); of each query's partial top-(k+1) only the results that
reach its threshold (`beating`; 0.66 a probe in the 400k bench) go to its *home* group (the group of its own list).
There (`ScanHomeGroup`) the group's titles, in every shard, are routed and scored against their own group's
lists again (the home scan is done twice rather than shuffled), and merged with the results from the other
groups; the title itself is left out (`merge_batch`). A result below the threshold cannot enter the top-(k+1):
the home results already hold k+1 at or above it. So the first shuffle carries one row per (title, other group
it probes) (`shuffled_group_probes` in the run's summary) and the second one entry of 16 bytes per result that
beats a threshold (`shuffled_partial_entries`). The lists a query probes and the scores computed there are
those of the plain IVF search, so the top-k is the same (ties aside), however the lists are grouped.

It applies to IVF-Flat indexes held by faiss that hold as many titles as the embeddings (`list_scan_applies`);
any other index (compressed codes, a transform in front, another backend) is searched query by query as before.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Optional

import apache_beam as beam
import faiss
import numpy as np
from apache_beam.metrics.metric import Metrics
from faiss.contrib.big_batch_search import BlockComputer
from faiss.contrib.inspect_tools import get_invlist

METRICS_NAMESPACE = "candidates"


class RoutedQueries(NamedTuple):
    """The titles of one source (a shard's lists of one group) whose queries probe lists of another group: their
    rows in the source (the list and offset of each follow from the source's list sizes, so only the row is
    sent), the score a result must reach to matter, and which of the group's lists each probes. Numpy arrays of
    narrow types, one element per (source, probed group): ~4 + 4 + 2 × (most lists of the group a row probes)
    bytes a row, where the previous form (list, offset and all nprobe list numbers in int32) took ~44."""

    batch: tuple[int, int]  # the source's key: (shard, home group)
    positions: np.ndarray  # int32 [m]: rows in the source
    thresholds: np.ndarray  # float32 [m]: each row's (depth)-th best score in its home group (-inf: none)
    lists: np.ndarray  # int16 (int32 for groups of 32,768 lists or more) [m, c]: probed lists, as their rank in the
    #                    probed group's `lists_of_group`; -1 where none


class Partial(NamedTuple):
    """One list group's best results for queries of one batch, dense (each row's top-`depth`): the home scan."""

    positions: np.ndarray  # int32 [m]
    scores: np.ndarray  # float32 [m, depth], descending
    ids: np.ndarray  # int64 [m, depth], -1 where none


class Beating(NamedTuple):
    """The results of one list group, for queries of one batch, that reach the query's threshold: one entry per
    (query, result) (16 bytes an entry, where a dense top-(k+1) took 4 + 12 (k+1) a query)."""

    positions: np.ndarray  # int32 [e]: the query's row in its source, repeated per result
    scores: np.ndarray  # float32 [e]
    ids: np.ndarray  # int64 [e]


# --- plain functions -------------------------------------------------------------------------------------------
def list_scan_computer(index) -> Optional[BlockComputer]:
    """faiss' `BlockComputer` for an IVF-Flat index: its lists hold the vectors exactly, so each title's query is
    read from them and scored as the plain search scores it; None for any other index (compressed codes would
    make the query a decoded approximation; `big_batch_search` also gets residual codes wrong under inner
    product)."""
    if not isinstance(index, faiss.IndexIVFFlat):
        return None
    return BlockComputer(index)


def list_scan_applies(manifest: dict, embedded_rows: Optional[int] = None) -> bool:
    """Whether the index a manifest describes is searched list by list (see `list_scan_computer`): the titles are
    then those of the index, so it must hold as many as the embeddings (`embedded_rows`) it was built from."""
    if manifest.get("backend", "faiss") != "faiss" or not manifest.get("nlist"):
        return False
    if embedded_rows is not None and manifest.get("count") != embedded_rows:
        return False
    from pipelines.index.faiss_index import METRIC

    empty = faiss.index_factory(manifest["dim"], manifest["factory"], METRIC)  # alive while downcast looks at it
    return list_scan_computer(faiss.downcast_index(empty)) is not None


def lists_per_group(nlist: int, rows: int, nprobe: int, queries_per_group: int) -> int:
    """Consecutive lists per group so that a group is probed by about `queries_per_group` queries on average
    (each of `rows` queries probes `nprobe` of the `nlist` lists)."""
    probes_per_list = max(1.0, rows * min(nprobe, nlist) / nlist)
    return max(1, min(nlist, math.floor(queries_per_group / probes_per_list)))


def group_count(nlist: int, group_size: int) -> int:
    """How many list groups of at most `group_size` lists the `nlist` lists fall in."""
    return -(-nlist // group_size)


def list_sources(num_shards: int, nlist: int, group_size: int) -> list[tuple[int, int]]:
    """(shard, group) of every source: a shard's lists of one group."""
    return [(shard, group) for shard in range(num_shards) for group in range(group_count(nlist, group_size))]


def group_lists_by_proximity(centroids: np.ndarray, group_size: int, seed: int = 1234) -> np.ndarray:
    """The group (int32 [nlist]) of each inverted list: groups of at most `group_size` lists whose coarse
    centroids lie close together, so that most of the `nprobe` lists a title probes (the ones nearest to it, hence
    to each other) fall in its own list's group. Consecutive list numbers are unrelated in space: grouped by
    number, a title's lists fall in about `nprobe` different groups, and each of those is a routed element and a
    partial top-k in the shuffles. A k-means of the centroids (`faiss.Kmeans`) into ⌈nlist / group_size⌉ groups,
    then each list to its nearest group with room left, the closest (list, group) pairs first. Computed from the
    quantiser alone, once per run; every step reads the same copy (a side input of nlist ints)."""
    nlist, dim = centroids.shape
    groups = group_count(nlist, group_size)
    if groups == 1:
        return np.zeros(nlist, np.int32)
    if group_size == 1:
        return np.arange(nlist, dtype=np.int32)
    centroids = np.ascontiguousarray(centroids, np.float32)
    kmeans = faiss.Kmeans(dim, groups, niter=20, seed=seed, spherical=True, min_points_per_centroid=1,
                          max_points_per_centroid=group_size * 4)
    kmeans.train(centroids)
    # nearest groups first: a list whose few nearest are full takes the nearest with room (searched again)
    scores, nearest = faiss.knn(centroids, kmeans.centroids, min(groups, 16), faiss.METRIC_INNER_PRODUCT)
    room = np.full(groups, group_size)
    group_of = np.full(nlist, -1, np.int32)
    order = np.argsort(-scores, axis=None, kind="stable")
    for row, rank in zip(*np.unravel_index(order, scores.shape)):
        group = nearest[row, rank]
        if group_of[row] < 0 and room[group] > 0:
            group_of[row], room[group] = group, room[group] - 1
    for row in np.flatnonzero(group_of < 0):
        free = np.flatnonzero(room > 0)
        group = free[np.argmax(kmeans.centroids[free] @ centroids[row])]
        group_of[row], room[group] = group, room[group] - 1
    return group_of


def groups_probed(group_of: np.ndarray, lists: np.ndarray) -> np.ndarray:
    """How many groups each query probes, given the lists (int [m, nprobe], -1: none) it probes."""
    groups = np.where(lists >= 0, group_of[np.maximum(lists, 0)], -1)
    groups.sort(axis=1)
    distinct = (groups >= 0) & np.concatenate([np.ones((len(groups), 1), bool), groups[:, 1:] != groups[:, :-1]],
                                              axis=1)
    return distinct.sum(axis=1)


def coarse_centroids(ivf) -> np.ndarray:
    """The coarse quantiser's centroids, float32 [nlist, d] (a flat or HNSW quantiser stores them exactly)."""
    return faiss.downcast_index(ivf.quantizer).reconstruct_n(0, ivf.nlist)


def _list_vectors(ivf, list_no: int) -> np.ndarray:
    """A view of one IVF-Flat list's vectors in the (memory-mapped) index, float32 [size, d]; no copy."""
    size = ivf.invlists.list_size(list_no)
    if not size:
        return np.empty((0, ivf.d), np.float32)
    codes = faiss.rev_swig_ptr(ivf.invlists.get_codes(list_no), size * ivf.code_size)
    return codes.view(np.float32).reshape(size, ivf.d)


def lists_of_group(group_of: np.ndarray, group: int) -> list[int]:
    return [int(list_no) for list_no in np.flatnonzero(group_of == group)]


def _rank_dtype(group_of: np.ndarray):
    """The dtype of a list's rank in its group (`RoutedQueries.lists`)."""
    return np.int16 if np.bincount(group_of).max() < 2 ** 15 else np.int32


def list_ranks(group_of: np.ndarray) -> np.ndarray:
    """Each list's rank in its group's `lists_of_group` (ascending list numbers)."""
    order = np.argsort(group_of, kind="stable")
    starts = np.searchsorted(group_of[order], group_of[order], side="left")
    rank = np.empty(len(group_of), _rank_dtype(group_of))
    rank[order] = np.arange(len(group_of)) - starts
    return rank


def route_source(ivf, shard: int, group: int, group_of: np.ndarray, nprobe: int,
                 quantizer) -> tuple[tuple[int, int], np.ndarray, list[tuple[int, RoutedQueries]]]:
    """(the source's key, its titles' ids, (group, its `RoutedQueries`) for every group they probe): the vectors
    of a shard's lists in `group` (`group_of`: each list's group), assigned to their `nprobe` lists by the shared
    quantiser. The thresholds are -inf here (`with_thresholds` sets them)."""
    key = (shard, group)
    lists_in = lists_of_group(group_of, group)
    ids = [get_invlist_ids(ivf, list_no) for list_no in lists_in]
    if not sum(len(chunk) for chunk in ids):
        return key, np.empty(0, np.int64), []
    vectors = np.concatenate([_list_vectors(ivf, list_no) for list_no in lists_in])
    _, lists = quantizer.search(vectors, nprobe)
    groups = np.where(lists >= 0, group_of[np.maximum(lists, 0)], -1)
    rank = list_ranks(group_of)
    routed = []
    for probed in np.unique(groups[groups >= 0]):
        inside = groups == probed
        rows = np.flatnonzero(inside.any(axis=1)).astype(np.int32)
        ranks = np.where(inside[rows], rank[np.maximum(lists[rows], 0)], -1).astype(rank.dtype)
        ranks = -np.sort(-ranks, axis=1)[:, :int(inside[rows].sum(axis=1).max())]  # probed lists first, -1 after
        routed.append((int(probed), RoutedQueries(key, rows, np.full(len(rows), -np.inf, np.float32), ranks)))
    return key, np.concatenate(ids), routed


def get_invlist_ids(ivf, list_no: int) -> np.ndarray:
    size = ivf.invlists.list_size(list_no)
    return faiss.rev_swig_ptr(ivf.invlists.get_ids(list_no), size).copy() if size else np.empty(0, np.int64)


def query_vectors(ivfs: list, group_of: np.ndarray, routed: list[RoutedQueries]) -> np.ndarray:
    """The routed titles' own vectors, read from their source's lists in the index (float32 [m, d]): a source's
    rows are its lists' vectors one after the other, in `lists_of_group` order."""
    parts = []
    for part in routed:
        shard, home = part.batch
        ivf = ivfs[shard]
        lists_in = lists_of_group(group_of, home)
        starts = np.cumsum([0] + [ivf.invlists.list_size(list_no) for list_no in lists_in])
        which = np.searchsorted(starts, part.positions, side="right") - 1
        vectors = np.empty((len(part.positions), ivf.d), np.float32)
        for at in np.unique(which):
            rows = which == at
            vectors[rows] = _list_vectors(ivf, lists_in[at])[part.positions[rows] - starts[at]]
        parts.append(vectors)
    return np.concatenate(parts)


def scan_list_group(ivfs: list, computer: BlockComputer, group: int, group_of: np.ndarray,
                    routed: Iterable[RoutedQueries], depth: int) -> Iterator[tuple[tuple[int, int], Partial]]:
    """(batch, partial top-`depth`) for every batch with queries probing lists of `group`: each list of the group,
    in every shard, is read once and scored against all the queries that probe it."""
    routed = list(routed)  # one group's queries: bounded by `queries_per_group`, not by the catalog
    vectors = query_vectors(ivfs, group_of, routed)
    width = max(r.lists.shape[1] for r in routed)  # each element keeps only as many columns as it needs
    ranks = np.concatenate([np.pad(r.lists, ((0, 0), (0, width - r.lists.shape[1])), constant_values=-1)
                            for r in routed])
    heap = faiss.ResultHeap(len(vectors), depth, keep_max=True)
    for rank, list_no in enumerate(lists_of_group(group_of, group)):
        queries = np.flatnonzero((ranks == rank).any(axis=1))
        if not len(queries):
            continue
        for ivf in ivfs:
            list_ids, codes = get_invlist(ivf.invlists, list_no)
            if not len(list_ids):
                continue
            stored = codes.ravel() if computer.decode_func is None else computer.decode_func(codes)
            scores, rows = computer.block_search(vectors[queries], stored.reshape(len(list_ids), -1),
                                                 list_ids, min(depth, len(list_ids)))
            heap.add_result_subset(queries.astype(np.int64), scores, np.where(rows >= 0, list_ids[rows], -1))
        Metrics.counter(METRICS_NAMESPACE, "lists_scanned").inc()
    heap.finalize()
    start = 0
    for part in routed:
        end = start + len(part.positions)
        yield part.batch, Partial(part.positions, heap.D[start:end].copy(), heap.I[start:end].copy())
        start = end


def home_thresholds(home: Partial, rows: int) -> np.ndarray:
    """Each of a source's `rows` titles' threshold (float32 [rows]): the last (depth-th) score of its top-`depth`
    in its own group (`home`), -inf for a title without a full top there (or not scored there). A result from
    another group that scores below it cannot enter the title's merged top-`depth`: the home results already hold
    `depth` entries at or above it."""
    thresholds = np.full(rows, -np.inf, np.float32)
    full = home.ids[:, -1] >= 0
    thresholds[home.positions[full]] = home.scores[full, -1]
    return thresholds


def with_thresholds(routed: RoutedQueries, thresholds: np.ndarray) -> RoutedQueries:
    return routed._replace(thresholds=thresholds[routed.positions])


def beating(partial: Partial, thresholds: np.ndarray) -> Beating:
    """The entries of a partial top-k (another group's) that reach their query's threshold (`home_thresholds`); a
    tie with the threshold is kept, so the merge sees every result that can enter the top-k whatever order it
    breaks ties in."""
    keep = (partial.ids >= 0) & (partial.scores >= thresholds[:, None])
    rows, _ = np.nonzero(keep)
    return Beating(partial.positions[rows], partial.scores[keep], partial.ids[keep])


def merge_batch(size: int, home: Iterable[Partial], others: Iterable[Beating],
                depth: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch's (scores, ids) [size, depth], descending: the best of its own group's top-`depth` and of the
    other groups' results that beat it. The home results go in first, so a result from another group that only
    ties the threshold stays out, as it would had the whole partial been merged after them."""
    heap = faiss.ResultHeap(size, depth, keep_max=True)
    for part in home:
        heap.add_result_subset(part.positions.astype(np.int64), part.scores, part.ids)
    for part in others:
        # a query's entries, one at a time: the n-th entry of every query that has one, in one call
        order = np.argsort(part.positions, kind="stable")
        positions, scores, ids = part.positions[order], part.scores[order], part.ids[order]
        first = np.searchsorted(positions, positions, side="left")
        nth = np.arange(len(positions)) - first
        for n in range(int(nth.max()) + 1 if len(nth) else 0):
            at = nth == n
            heap.add_result_subset(positions[at].astype(np.int64), scores[at, None], ids[at, None])
    heap.finalize()
    return heap.D, heap.I


def batch_neighbours(index, own_ids: np.ndarray, scores: np.ndarray, ids: np.ndarray,
                     k: int) -> Iterator[tuple[str, list[dict]]]:
    """(title_id, its top-k other titles) for one merged source, as the plain search path writes them."""
    from pipelines.candidates.pipeline import top_k_excluding

    # the loader's id → title id mapping, as its `search` uses
    titles, _ = index._as_titles(np.zeros((len(own_ids), 1), np.float32), own_ids[:, None])
    found, found_scores = index._as_titles(scores, ids)
    for (title_id,), row_ids, row_scores in zip(titles, found, found_scores):
        yield title_id, top_k_excluding(row_ids, row_scores, frozenset([title_id]), k)


# --- Beam ------------------------------------------------------------------------------------------------------
class _IndexedDoFn(beam.DoFn):
    """A DoFn that opens the machine's memory-mapped index in `setup` (see `index_copy.open_index`)."""

    def __init__(self, index_handle, index_uri: str, model_version: str, faiss_threads: Optional[int]):
        self._shared, self._index_uri, self._model_version = index_handle, index_uri, model_version
        self._faiss_threads = faiss_threads
        self._copy = self._index = None

    def setup(self):
        from pipelines.candidates.index_copy import open_index

        self._copy, self._index = open_index(self._shared, self._index_uri, self._model_version, self._faiss_threads)

    def _ivfs(self) -> list:
        from pipelines.index.faiss_index import ivf_of, set_search_parameters

        for shard in self._index.shards:
            set_search_parameters(shard, self._index.nprobe)
        return [faiss.downcast_index(ivf_of(shard)) for shard in self._index.shards]


class GroupLists(_IndexedDoFn):
    """(anything) → each list's group (`group_lists_by_proximity`), from the index's shared coarse quantiser."""

    def __init__(self, index_handle, index_uri, model_version, faiss_threads, group_size: int):
        super().__init__(index_handle, index_uri, model_version, faiss_threads)
        self._group_size = group_size

    def process(self, _):
        yield group_lists_by_proximity(coarse_centroids(self._ivfs()[0]), self._group_size)


class RouteSources(_IndexedDoFn):
    """(shard, group) → (list group, `RoutedQueries`) for each *other* group the source's titles probe, each title
    with its threshold: the source's titles are first scored against their own group's lists (which
    `ScanHomeGroup` does again where they are merged, so that no home result is shuffled), and only the results of
    other groups that reach the title's (k+1)-th home score come back from them."""

    def __init__(self, index_handle, index_uri, model_version, faiss_threads, depth: int):
        super().__init__(index_handle, index_uri, model_version, faiss_threads)
        self._depth = depth

    def process(self, source, group_of):
        shard, group = source
        ivfs = self._ivfs()
        computer = list_scan_computer(ivfs[0])
        assert computer is not None, "the plan chose the list scan for an index it does not apply to"
        _, own_ids, routed = route_source(ivfs[shard], shard, group, group_of, ivfs[0].nprobe, ivfs[0].quantizer)
        home = [queries for probed, queries in routed if probed == group]
        thresholds = np.full(len(own_ids), -np.inf, np.float32)
        for _, partial in scan_list_group(ivfs, computer, group, group_of, home, self._depth) if home else ():
            thresholds = home_thresholds(partial, len(own_ids))
        foreign = [(probed, with_thresholds(queries, thresholds)) for probed, queries in routed if probed != group]
        # (title, other group) pairs: each is a routed row in the first shuffle
        Metrics.counter(METRICS_NAMESPACE, "shuffled_group_probes").inc(sum(len(r.positions) for _, r in foreign))
        yield from foreign


class ScanListGroup(_IndexedDoFn):
    """(list group, its `RoutedQueries`) → (the queries' home group, (shard, `Beating`)) for every source with a
    query whose results in the group reach its threshold."""

    def __init__(self, index_handle, index_uri, model_version, faiss_threads, depth: int):
        super().__init__(index_handle, index_uri, model_version, faiss_threads)
        self._depth = depth

    def process(self, grouped, group_of):
        group, routed = grouped
        routed = list(routed)  # one group's queries: bounded by `queries_per_group`, not by the catalog
        ivfs = self._ivfs()
        computer = list_scan_computer(ivfs[0])
        assert computer is not None, "the plan chose the list scan for an index it does not apply to"
        for part, ((shard, home), partial) in zip(routed, scan_list_group(ivfs, computer, group, group_of, routed,
                                                                          self._depth)):
            kept = beating(partial, part.thresholds)
            # results that reach their title's threshold: the rows of the second shuffle (16 bytes each)
            Metrics.counter(METRICS_NAMESPACE, "shuffled_partial_entries").inc(len(kept.ids))
            if len(kept.ids):
                yield home, (shard, kept)


class ScanHomeGroup(_IndexedDoFn):
    """(group, {the results its titles got from other groups}) → (title_id, top-k neighbours) for every title
    whose list is in the group, in every shard: its own group's lists are scored here (as `RouteSources` scored
    them for the thresholds) and merged with those results."""

    def __init__(self, index_handle, index_uri, model_version, faiss_threads, k: int):
        super().__init__(index_handle, index_uri, model_version, faiss_threads)
        self._k = k

    def process(self, joined, group_of):
        group, grouped = joined
        ivfs = self._ivfs()
        computer = list_scan_computer(ivfs[0])
        assert computer is not None, "the plan chose the list scan for an index it does not apply to"
        foreign = list(grouped["partials"])  # this group's titles' results: bounded by the group, not the catalog
        for shard, ivf in enumerate(ivfs):
            _, own_ids, routed = route_source(ivf, shard, group, group_of, ivfs[0].nprobe, ivfs[0].quantizer)
            if not len(own_ids):
                continue
            home = [queries for probed, queries in routed if probed == group]
            home = [partial for _, partial in scan_list_group(ivfs, computer, group, group_of, home,
                                                              self._k + 1)] if home else []
            others = [kept for source_shard, kept in foreign if source_shard == shard]
            scores, ids = merge_batch(len(own_ids), home, others, self._k + 1)
            Metrics.counter(METRICS_NAMESPACE, "title_sources").inc()
            yield from batch_neighbours(self._index, own_ids, scores, ids, self._k)


class AllTitlesNeighbours(beam.PTransform):
    """The index's lists → (title_id, its top-k other titles) for every title it holds, by list groups."""

    def __init__(self, plan, index_handle):
        super().__init__()
        self._plan, self._index_handle = plan, index_handle

    def expand(self, pbegin):
        plan, handle = self._plan, self._index_handle
        opened = (handle, plan.index_uri, plan.model_version, plan.faiss_threads)
        groups = group_count(plan.index_nlist, plan.lists_per_group)
        group_of = beam.pvalue.AsSingleton(
            pbegin
            | "OneIndex" >> beam.Create([plan.index_uri])
            | "GroupListsByProximity" >> beam.ParDo(GroupLists(*opened, plan.lists_per_group)))
        partials = (pbegin
                    | "ListSources" >> beam.Create(list_sources(plan.index_shards, plan.index_nlist,
                                                                plan.lists_per_group))
                    | "SpreadSources" >> beam.Reshuffle()
                    | "RouteSources" >> beam.ParDo(RouteSources(*opened, plan.k + 1), group_of)
                    | "GroupByListGroup" >> beam.GroupByKey()
                    | "ScanListGroup" >> beam.ParDo(ScanListGroup(*opened, plan.k + 1), group_of))
        homes = (pbegin
                 | "ListGroups" >> beam.Create([(group, None) for group in range(groups)])
                 | "SpreadGroups" >> beam.Reshuffle())
        return ({"groups": homes, "partials": partials}
                | "JoinPartialsByHomeGroup" >> beam.CoGroupByKey()
                | "ScanHomeGroup" >> beam.ParDo(ScanHomeGroup(*opened, plan.k), group_of))
