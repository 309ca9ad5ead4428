"""Item→item by list groups (faiss' big_batch_search split across Beam) gives every title the same top-k as the
plain query-by-query search of the same IVF index, and applies only to indexes whose lists it scores exactly."""
import csv
import glob
import os

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.bench.index import clustered_unit_vectors
from pipelines.candidates import all_titles
from pipelines.candidates import pipeline as candidates
from pipelines.config import load_config
from pipelines.contracts import ITEM2ITEM_DIR
from pipelines.index.loader import load_index
from tests.pipelines.candidates.candidate_inputs import build_index, write_embeddings

K = 5
NPROBE = 3
TITLES = [f"tt{i:05d}" for i in range(3000)]
VECTORS = clustered_unit_vectors(len(TITLES), 16, seed=5, intrinsic_dim=8)
INDEX_SETTINGS = ["index.factory=IVF32,Flat", f"index.nprobe={NPROBE}", "index.tune_nprobe=false",
                  "index.vectors_per_shard=1200", "index.min_recall_at_10=0"]
SMALL_GROUPS = [f"candidates.k={K}", "candidates.all_titles_queries_per_group=1000"]


def _item2item(out: str) -> dict:
    rows = pq.read_table(sorted(glob.glob(os.path.join(out, ITEM2ITEM_DIR, "*.parquet")))).to_pylist()
    return {row["title_id"]: [(n["title_id"], n["score"]) for n in row["neighbors"]] for row in rows}


def _run(root, out: str, settings: list[str]) -> dict:
    sets = [arg for item in settings for arg in ("--set", item)]
    assert candidates.main(["--config", "configs/local.yaml", *sets, "--index", str(root / "index"),
                            "--embeddings", str(root / "embeddings"), "--history", str(root / "history.csv"),
                            "--out", out]) == 0
    return _item2item(out)


@pytest.fixture(scope="module")
def ivf_catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("all-titles")
    write_embeddings(str(root / "embeddings"), TITLES, VECTORS)
    manifest = build_index(str(root / "embeddings"), str(root / "index"), INDEX_SETTINGS)
    with open(root / "history.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["user_id", "title_id"], ["ana", TITLES[0]], ["ana", TITLES[1]]])
    return {"root": root, "manifest": manifest,
            "list_scan": _run(root, str(root / "list-scan"), SMALL_GROUPS),
            "per_query": _run(root, str(root / "per-query"),
                              [f"candidates.k={K}", "candidates.all_titles_search=per_query"])}


def _assert_same_top_k_ties_aside(found: list, expected: list):
    assert len(found) == len(expected)
    found_scores, expected_scores = [s for _, s in found], [s for _, s in expected]
    np.testing.assert_allclose(found_scores, expected_scores, atol=1e-5)
    for (title, score), (other, _) in zip(found, expected):
        # a different title at a rank only where two titles score the same there
        assert title == other or any(abs(score - s) < 1e-5 and t == title for t, s in expected)


def test_the_index_is_an_ivf_searched_by_list_groups_of_bounded_size(ivf_catalog, tmp_path):
    root, manifest = ivf_catalog["root"], ivf_catalog["manifest"]
    assert manifest["nlist"] == 32 and manifest["nprobe"] == NPROBE and len(manifest["shards"]) == 3
    plan = candidates.plan_candidates(str(root / "index"), str(root / "embeddings"), str(root / "history.csv"),
                                      str(tmp_path / "out"), load_config("configs/local.yaml", SMALL_GROUPS))
    # 3,000 titles × 3 probes over 32 lists ≈ 281 queries per list: 3 lists per group of ~1,000 queries
    assert plan.lists_per_group == 3


def test_every_title_gets_the_plain_search_top_k_without_itself(ivf_catalog):
    list_scan, per_query = ivf_catalog["list_scan"], ivf_catalog["per_query"]
    assert sorted(list_scan) == sorted(per_query) == TITLES
    for title in TITLES:
        assert title not in [t for t, _ in list_scan[title]]
        _assert_same_top_k_ties_aside(list_scan[title], per_query[title])


def test_the_list_scan_equals_the_loaded_index_search_of_every_title(ivf_catalog):
    index = load_index(str(ivf_catalog["root"] / "index"))
    found, scores = index.search(VECTORS, K + 1)
    for title, row, row_scores in zip(TITLES, found, scores):
        expected = [(t, float(s)) for t, s in zip(row, row_scores) if t != title][:K]
        _assert_same_top_k_ties_aside(ivf_catalog["list_scan"][title], expected)


def _empty(factory: str, by_residual=None):
    index = faiss.downcast_index(faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT))
    if by_residual is not None:
        index.by_residual = by_residual
    return index


def test_the_list_scan_applies_to_ivf_flat_and_to_codes_without_residuals_only():
    assert all_titles.list_scan_computer(_empty("IVF8,Flat")) is not None
    assert all_titles.list_scan_computer(_empty("IVF8,SQ8", by_residual=False)) is not None
    # big_batch_search subtracts the centroid from the query: wrong under inner product (recall 0.14 measured)
    assert all_titles.list_scan_computer(_empty("IVF8,SQ8")) is None
    assert all_titles.list_scan_computer(_empty("Flat")) is None
    assert all_titles.list_scan_computer(_empty("HNSW8,Flat")) is None
    assert not all_titles.list_scan_applies({"factory": "PCA8,IVF8,Flat", "dim": 16, "nlist": 8})
    assert not all_titles.list_scan_applies({"factory": "IVF8,Flat", "dim": 16, "nlist": 8, "backend": "scann"})
    assert all_titles.list_scan_applies({"factory": "IVF8,Flat", "dim": 16, "nlist": 8})


def test_a_group_holds_about_the_configured_number_of_queries_whatever_the_catalog():
    assert all_titles.lists_per_group(nlist=2048, rows=1_000_000, nprobe=6, queries_per_group=50_000) == 17
    assert all_titles.lists_per_group(nlist=32768, rows=10_000_000, nprobe=6, queries_per_group=50_000) == 27
    assert all_titles.lists_per_group(nlist=16, rows=100, nprobe=4, queries_per_group=50_000) == 16
