"""On an IVF index: item→item by list groups (faiss' big_batch_search split across Beam) gives every title the same
top-k as the plain query-by-query search, and applies only to indexes whose lists it scores exactly; user queries
built from the vectors the index stores equal the weighted average of the embeddings, with no embedding shuffled."""
import csv
import glob
import json
import os

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.bench.index import clustered_unit_vectors
from pipelines.candidates import all_titles
from pipelines.candidates import pipeline as candidates
from pipelines.config import load_config
from pipelines.contracts import CANDIDATES_SUMMARY_FILE, ITEM2ITEM_DIR, USER_CANDIDATES_DIR
from pipelines.index.faiss_index import ivf_of
from pipelines.index.loader import load_index
from tests.pipelines.candidates.candidate_inputs import build_index, write_embeddings

K = 5
NPROBE = 3
TITLES = [f"tt{i:05d}" for i in range(1500)]
VECTORS = clustered_unit_vectors(len(TITLES), 16, seed=5, intrinsic_dim=8)
INDEX_SETTINGS = ["index.factory=IVF16,Flat", f"index.nprobe={NPROBE}", "index.tune_nprobe=false",
                  "index.vectors_per_shard=600", "index.min_recall_at_10=0"]
HISTORY = {"ana": [(TITLES[0], 1.0), (TITLES[1], 2.0), ("not-indexed", 1.0)],
           "bo": [(TITLES[i], 1.0) for i in range(100, 140)], "ghost": [("not-indexed", 1.0)]}
SMALL_GROUPS = [f"candidates.k={K}", "candidates.all_titles_queries_per_group=1000"]


def _lists(out: str, directory: str, key: str, column: str) -> dict:
    rows = pq.read_table(sorted(glob.glob(os.path.join(out, directory, "*.parquet")))).to_pylist()
    return {row[key]: [(n["title_id"], n["score"]) for n in row[column]] for row in rows}


def _run(root, out: str, settings: list[str]) -> dict:
    sets = [arg for item in settings for arg in ("--set", item)]
    assert candidates.main(["--config", "configs/local.yaml", *sets, "--index", str(root / "index"),
                            "--embeddings", str(root / "embeddings"), "--history", str(root / "history.csv"),
                            "--out", out]) == 0
    return {"item2item": _lists(out, ITEM2ITEM_DIR, "title_id", "neighbors"),
            "users": _lists(out, USER_CANDIDATES_DIR, "user_id", "candidates")}


@pytest.fixture(scope="module")
def ivf_catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("all-titles")
    write_embeddings(str(root / "embeddings"), TITLES, VECTORS)
    manifest = build_index(str(root / "embeddings"), str(root / "index"), INDEX_SETTINGS)
    with open(root / "history.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["user_id", "title_id", "weight"]] + [
            [user, title, weight] for user, watches in HISTORY.items() for title, weight in watches])
    return {"root": root, "manifest": manifest,
            "list_scan": _run(root, str(root / "list-scan"), SMALL_GROUPS)}


def _assert_same_top_k_ties_aside(found: list, expected: list):
    assert len(found) == len(expected)
    found_scores, expected_scores = [s for _, s in found], [s for _, s in expected]
    np.testing.assert_allclose(found_scores, expected_scores, atol=1e-5)
    for (title, score), (other, _) in zip(found, expected):
        # a different title at a rank only where two titles score the same there
        assert title == other or any(abs(score - s) < 1e-5 and t == title for t, s in expected)


def test_the_index_is_an_ivf_searched_by_list_groups_of_bounded_size(ivf_catalog, tmp_path):
    root, manifest = ivf_catalog["root"], ivf_catalog["manifest"]
    assert manifest["nlist"] == 16 and manifest["nprobe"] == NPROBE and len(manifest["shards"]) == 3
    plan = candidates.plan_candidates(str(root / "index"), str(root / "embeddings"), str(root / "history.csv"),
                                      str(tmp_path / "out"), load_config("configs/local.yaml", SMALL_GROUPS))
    # 1,500 titles × 3 probes over 16 lists ≈ 281 queries per list: 3 lists per group of ~1,000 queries
    assert plan.lists_per_group == 3 and plan.user_vectors_from_index


def test_every_title_gets_the_plain_search_top_k_without_itself(ivf_catalog):
    """The plain search: the loaded index's `search` (query by query, nprobe lists each), as `posters candidates`
    searched with `candidates.all_titles_search=per_query` (and before the list scan)."""
    list_scan = ivf_catalog["list_scan"]["item2item"]
    assert sorted(list_scan) == TITLES
    index = load_index(str(ivf_catalog["root"] / "index"))
    found, scores = index.search(VECTORS, K + 1)
    for title, row, row_scores in zip(TITLES, found, scores):
        expected = [(t, float(s)) for t, s in zip(row, row_scores) if t != title][:K]
        _assert_same_top_k_ties_aside(ivf_catalog["list_scan"]["item2item"][title], expected)


def test_user_queries_from_the_index_vectors_equal_the_weighted_average_of_the_embeddings(ivf_catalog):
    index = load_index(str(ivf_catalog["root"] / "index"))
    row = {title: i for i, title in enumerate(TITLES)}
    users = ivf_catalog["list_scan"]["users"]
    assert sorted(users) == ["ana", "bo"]  # ghost watched only a title the index does not hold
    for user, found in users.items():
        watched = {title for title, _ in HISTORY[user]}
        total = sum(weight * VECTORS[row[title]] for title, weight in HISTORY[user] if title in row)
        titles, scores = index.search(total / np.linalg.norm(total), K + len(watched))
        expected = [(t, float(s)) for t, s in zip(titles[0], scores[0]) if t not in watched][:K]
        _assert_same_top_k_ties_aside(found, expected)


def test_no_embedding_is_shuffled_when_the_index_holds_the_vectors(ivf_catalog, tmp_path):
    """The user→item join keyed every embedding by title, and item→item queried title by title: both put the
    whole catalog through a shuffle of per-title elements."""
    import apache_beam as beam

    root = ivf_catalog["root"]
    plan = candidates.plan_candidates(str(root / "index"), str(root / "embeddings"), str(root / "history.csv"),
                                      str(tmp_path / "out"), load_config("configs/local.yaml", SMALL_GROUPS))
    pipeline = beam.Pipeline()
    candidates.build_pipeline(pipeline, plan)
    labels = [t.unique_name for t in pipeline.to_runner_api().components.transforms.values()]
    assert not [label for label in labels if "JoinWatchesWithEmbeddings" in label or "ReadEmbeddings" in label]
    assert any(label.endswith("UserQueries/GroupWatchesByUser") for label in labels)
    assert any(label.endswith("SimilarTitles/GroupByListGroup") for label in labels)
    # the partials are joined by home group, where the own group is scored; no per-source join of every title's
    # ids with all its partials, and the lists are grouped by proximity (a side input of nlist ints)
    assert any(label.endswith("SimilarTitles/JoinPartialsByHomeGroup") for label in labels)
    assert any(label.endswith("SimilarTitles/GroupListsByProximity") for label in labels)
    assert not [label for label in labels if "JoinPartialsByBatch" in label or "MergeBatch" in label]


_BUILT = []  # the factories' objects, kept alive while their downcast views are used


def _empty(factory: str, by_residual=None):
    _BUILT.append(faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT))
    index = faiss.downcast_index(_BUILT[-1])
    if by_residual is not None:
        index.by_residual = by_residual
    return index


def test_the_list_scan_applies_to_ivf_flat_only_and_to_an_index_of_every_embedded_title():
    assert all_titles.list_scan_computer(_empty("IVF8,Flat")) is not None
    # compressed codes: the query read from the lists would be a decoded approximation of the embedding
    assert all_titles.list_scan_computer(_empty("IVF8,SQ8", by_residual=False)) is None
    assert all_titles.list_scan_computer(_empty("IVF8,SQ8")) is None
    assert all_titles.list_scan_computer(_empty("Flat")) is None
    assert all_titles.list_scan_computer(_empty("HNSW8,Flat")) is None
    assert not all_titles.list_scan_applies({"factory": "PCA8,IVF8,Flat", "dim": 16, "nlist": 8})
    assert not all_titles.list_scan_applies({"factory": "IVF8,Flat", "dim": 16, "nlist": 8, "backend": "scann"})
    assert all_titles.list_scan_applies({"factory": "IVF8,Flat", "dim": 16, "nlist": 8, "count": 100}, 100)
    # an index of other embeddings than these (fewer titles): searched query by query, every embedded title
    assert not all_titles.list_scan_applies({"factory": "IVF8,Flat", "dim": 16, "nlist": 8, "count": 90}, 100)


def test_a_group_holds_about_the_configured_number_of_queries_whatever_the_catalog():
    assert all_titles.lists_per_group(nlist=2048, rows=1_000_000, nprobe=6, queries_per_group=50_000) == 17
    assert all_titles.lists_per_group(nlist=32768, rows=10_000_000, nprobe=6, queries_per_group=50_000) == 27
    assert all_titles.lists_per_group(nlist=16, rows=100, nprobe=4, queries_per_group=50_000) == 16


@pytest.fixture(scope="module")
def coarse_lists():
    """A trained coarse quantiser (128 lists) on clustered vectors and the 6 lists each vector probes."""
    vectors = clustered_unit_vectors(20_000, 32, seed=3, intrinsic_dim=12)
    kmeans = faiss.Kmeans(32, 128, niter=10, seed=4, spherical=True)
    kmeans.train(vectors)
    _, lists = faiss.knn(vectors, kmeans.centroids, 6, faiss.METRIC_INNER_PRODUCT)
    return kmeans.centroids, lists


def test_lists_are_grouped_by_centroid_proximity_so_a_title_probes_few_groups(coarse_lists):
    """Each (title, group it probes) is a row of both list-scan shuffles: grouped by list number a title's 6 lists
    fall in about 5 groups; grouped by proximity, in about 3."""
    centroids, lists = coarse_lists
    group_of = all_titles.group_lists_by_proximity(centroids, group_size=8)
    assert group_of.shape == (128,) and group_of.min() == 0 and group_of.max() == 15
    assert np.bincount(group_of).max() <= 8  # a group holds at most lists_per_group lists
    by_number = all_titles.groups_probed(np.arange(128) // 8, lists).mean()
    by_proximity = all_titles.groups_probed(group_of, lists).mean()
    assert by_number > 4.5 and by_proximity < 0.7 * by_number, (by_number, by_proximity)  # 5.2 → 3.1 here
    # the same centroids give the same groups (every step reads one copy; still, nothing random per process)
    np.testing.assert_array_equal(all_titles.group_lists_by_proximity(centroids, group_size=8), group_of)


def test_groups_of_uneven_and_trivial_sizes_hold_every_list(coarse_lists):
    centroids, _ = coarse_lists
    uneven = all_titles.group_lists_by_proximity(centroids, group_size=10)  # 13 groups, 128 lists
    assert np.bincount(uneven, minlength=13).max() <= 10 and np.bincount(uneven).sum() == 128
    np.testing.assert_array_equal(all_titles.group_lists_by_proximity(centroids, 1), np.arange(128))
    np.testing.assert_array_equal(all_titles.group_lists_by_proximity(centroids, 128), np.zeros(128))
    assert all_titles.groups_probed(np.array([0, 0, 1]), np.array([[0, 1, -1], [2, -1, -1]])).tolist() == [1, 1]


def test_the_list_scan_shuffles_one_row_per_title_and_other_group_it_probes(ivf_catalog):
    """The summary's `shuffled_group_probes` (rows of the routed and the partials shuffle: a title's probes of its
    own list's group are scored without one) is well below what grouping by list number and shuffling every
    probe, as the list scan did, gives on this index."""
    summary = json.loads((ivf_catalog["root"] / "list-scan" / CANDIDATES_SUMMARY_FILE).read_text())
    index = load_index(str(ivf_catalog["root"] / "index"))
    ivf = faiss.downcast_index(ivf_of(index.shards[0]))
    _, lists = ivf.quantizer.search(VECTORS, NPROBE)
    by_number = int(all_titles.groups_probed(np.arange(ivf.nlist) // 3, lists).sum())
    # 1,623 against 3,822 when it ran here
    assert 0 < summary["shuffled_group_probes"] < by_number / 2, (summary["shuffled_group_probes"], by_number)


def _union_top(home: all_titles.Partial, others: list, depth: int):
    """Every (score, id) a row got from its home group and from the other groups, best first (brute force)."""
    entries = {int(p): [] for p in home.positions}
    for row, scores, ids in zip(home.positions, home.scores, home.ids):
        entries[int(row)] += [(float(s), int(i)) for s, i in zip(scores, ids) if i >= 0]
    for part in others:
        for row, scores, ids in zip(part.positions, part.scores, part.ids):
            entries[int(row)] += [(float(s), int(i)) for s, i in zip(scores, ids) if i >= 0]
    return {row: sorted(found, reverse=True) for row, found in entries.items()}


def test_results_below_a_titles_home_threshold_are_dropped_and_no_result_of_its_top_k_is():
    """Scores drawn from 4 values, so ties at the threshold are the rule: the other groups' results kept by
    `beating` (ties with the (k+1)-th home score kept), merged after the home results, give every row the same
    top-(k+1) scores as merging the other groups' whole partials, with every result that scores strictly above the
    last one kept; and most entries are dropped."""
    rng = np.random.default_rng(7)
    rows, depth, groups = 200, 4, 3
    positions = np.arange(rows, dtype=np.int32)

    def partial(first_id, fill=depth, low=0):  # the home group's results score higher, as the nearest lists'
        scores = -np.sort(-rng.integers(low, low + 4, (rows, depth)).astype(np.float32) / 4, axis=1)
        ids = first_id + np.arange(rows * depth, dtype=np.int64).reshape(rows, depth)
        ids[:, fill:], scores[:, fill:] = -1, -np.finfo(np.float32).max  # an unfilled heap's slots
        return all_titles.Partial(positions, scores, ids)

    home = partial(0, low=2)
    home.ids[:20, depth - 1] = -1  # 20 rows with fewer than depth home results: no threshold, everything kept
    home.scores[:20, depth - 1] = -np.finfo(np.float32).max
    others = [partial(10_000 * (g + 1)) for g in range(groups)]
    thresholds = all_titles.home_thresholds(home, rows)
    assert np.isinf(thresholds[:20]).all() and (thresholds[20:] == home.scores[20:, -1]).all()
    kept = [all_titles.beating(other, thresholds) for other in others]
    whole = [all_titles.beating(other, np.full(rows, -np.inf, np.float32)) for other in others]
    assert sum(len(k.ids) for k in kept) < 0.6 * sum(len(w.ids) for w in whole)
    for k, other in zip(kept, others):  # a kept entry reaches its threshold; a tie with it is kept
        assert (k.scores >= thresholds[k.positions]).all()
        ties = (other.scores == thresholds[:, None]) & (other.ids >= 0)
        assert ties.sum() > 0 and set(other.ids[ties]) <= set(k.ids)
    scores, ids = all_titles.merge_batch(rows, [home], kept, depth)
    whole_scores, whole_ids = all_titles.merge_batch(rows, [home], whole, depth)
    np.testing.assert_array_equal(scores, whole_scores)
    np.testing.assert_array_equal(ids, whole_ids)
    union = _union_top(home, others, depth)
    for row in range(rows):
        expected = union[row][:depth]
        assert scores[row].tolist() == [s for s, _ in expected]
        # every result strictly above the row's last score is in its top (only ties at the end may differ)
        above = {i for s, i in union[row] if s > scores[row, -1]}
        assert above <= set(ids[row].tolist())


def test_a_foreign_group_returns_far_fewer_results_than_a_top_k_per_probe(ivf_catalog):
    """The summary's `shuffled_partial_entries` (results of other groups that reach their title's (k+1)-th home
    score) against the (k+1) per routed probe that whole partial top-(k+1) lists were."""
    summary = json.loads((ivf_catalog["root"] / "list-scan" / CANDIDATES_SUMMARY_FILE).read_text())
    assert 0 < summary["shuffled_partial_entries"] < summary["shuffled_group_probes"] * (K + 1) / 4, summary
