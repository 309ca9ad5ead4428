"""faiss mechanics: stable ids, the index choice, training, shards, merging, recall."""
import hashlib

import numpy as np
import pytest

from pipelines.index import faiss_index as vi
from tests.pipelines.embeddings_fixture import title_ids, unit_vectors


def test_stable_id_is_the_first_8_bytes_of_sha256_masked_to_63_bits():
    digest = hashlib.sha256(b"tt0111161").digest()
    assert vi.stable_id("tt0111161") == int.from_bytes(digest[:8], "big") & (2**63 - 1)
    assert vi.stable_ids(["tt0111161", "tt0068646"]).tolist() == [vi.stable_id("tt0111161"), vi.stable_id("tt0068646")]


def test_ids_are_nonnegative_and_do_not_depend_on_the_other_titles():
    small = vi.stable_ids(title_ids(100))
    grown = vi.stable_ids(title_ids(200)[::-1])
    assert (small >= 0).all()
    assert dict(zip(title_ids(100), small.tolist())).items() <= dict(zip(title_ids(200)[::-1], grown.tolist())).items()


def test_a_title_listed_twice_is_refused():
    ids = vi.stable_ids(["a", "b", "a"])
    with pytest.raises(vi.IndexBuildError, match="'a' appears more than once"):
        vi.check_unique_ids(ids, ["a", "b", "a"])


def test_two_titles_with_the_same_id_are_a_collision_not_a_merge():
    with pytest.raises(vi.IndexBuildError, match="'x' and 'y' hash to the same id 7"):
        vi.check_unique_ids(np.array([7, 3, 7], np.int64), ["x", "z", "y"])


def test_vectors_that_are_not_unit_norm_are_refused_with_an_example():
    vectors = unit_vectors(10)
    vectors[4] *= 2
    vectors[6] = np.nan
    with pytest.raises(vi.IndexBuildError, match=r"2 embeddings are not unit-norm, e\.g\. 'tt0000004' \(norm 2"):
        vi.check_unit_norm(vectors, title_ids(10))


def test_small_catalogs_get_exact_search_large_ones_ivf():
    small = vi.plan_index(1_000, 16, flat_max_vectors=5_000)
    large = vi.plan_index(1_000_000, 128, flat_max_vectors=5_000)
    assert (small.factory, small.nlist, small.train_size) == ("IDMap2,Flat", None, 0)
    assert (large.factory, large.nlist, large.num_shards) == ("IVF2048,Flat", 2048, 2)
    assert large.train_size == 64 * 2048


def test_configured_factory_nlist_and_shards_win():
    assert vi.plan_index(10_000, 16, factory="IVF64_HNSW32,Flat", num_shards=3).factory == "IVF64_HNSW32,Flat"
    assert vi.plan_index(10_000, 16, flat_max_vectors=10, nlist=32).factory == "IVF32,Flat"
    assert vi.plan_index(10_000, 16, factory="HNSW16").factory == "IDMap2,HNSW16"  # ids need an id-aware index
    assert vi.plan_index(10_000, 16, num_shards=3).num_shards == 3


def test_every_id_lands_in_exactly_one_shard():
    ids = vi.stable_ids(title_ids(1000))
    shards = vi.shard_of(ids, 4)
    assert set(shards.tolist()) == {0, 1, 2, 3}
    assert (vi.shard_of(ids, 4) == shards).all()


def test_an_ivf_index_needs_at_least_nlist_training_vectors():
    with pytest.raises(vi.IndexBuildError, match="IVF64,Flat has 64 inverted lists but only 10 training vectors"):
        vi.train_empty_index("IVF64,Flat", 16, unit_vectors(10))


def test_shards_merged_equal_one_exact_search_over_all_vectors():
    vectors, queries = unit_vectors(600), unit_vectors(20, seed=1)
    ids = vi.stable_ids(title_ids(600))
    empty = vi.serialize(vi.train_empty_index("IDMap2,Flat", 16, vectors[:0]))
    shard_of = vi.shard_of(ids, 3)
    parts = [vi.search(vi.add_to_shard(empty, ids[shard_of == s], vectors[shard_of == s]), queries, 5)
             for s in range(3)]
    merged_scores, merged_ids = vi.merge_results(parts, 5)
    expected_rows = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    assert (merged_ids == ids[expected_rows]).all()
    np.testing.assert_allclose(merged_scores, np.take_along_axis(queries @ vectors.T, expected_rows, 1), rtol=1e-5)


def test_exact_search_pads_with_minus_one_when_there_are_fewer_than_k_vectors():
    scores, ids = vi.exact_search(unit_vectors(2), unit_vectors(3), np.array([10, 11, 12]), 5)
    assert ids.shape == (2, 5) and set(ids[:, 3:].ravel().tolist()) == {-1}
    assert set(ids[:, :3].ravel().tolist()) == {10, 11, 12}


def test_ivf_nprobe_trades_recall_for_work():
    vectors = unit_vectors(2000, clusters=32)
    ids = np.arange(2000, dtype=np.int64)
    index = vi.add_to_shard(vi.serialize(vi.train_empty_index("IVF32,Flat", 16, vectors)), ids, vectors)
    _, truth = vi.exact_search(vectors[:100], vectors, ids, 10)
    recalls = []
    for nprobe in (1, 32):
        vi.set_search_parameters(index, nprobe)
        recalls.append(vi.recall_at_k(vi.search(index, vectors[:100], 10)[1], truth))
    assert recalls[0] < 0.9 and recalls[1] == 1.0


def test_recall_counts_the_exact_neighbours_found():
    """Two queries: 2 of 3 found, 3 of 3 found → 5/6."""
    approx = np.array([[1, 2, 9], [4, 5, 6]])
    exact = np.array([[1, 2, 3], [6, 5, 4]])
    assert vi.recall_at_k(approx, exact, 3) == pytest.approx(5 / 6)


def test_without_self_drops_the_query_from_its_own_neighbours():
    found = np.array([[7, 1, 2], [3, 4, 5]])
    assert vi.without_self(found, np.array([7, 9]), 2).tolist() == [[1, 2], [3, 4]]


def test_nprobe_tuning_steps_by_about_root_two_up_to_a_quarter_of_the_lists():
    assert vi.nprobe_candidates(8, 256, tune=True) == [8, 11, 16, 23, 32, 45, 64]
    assert vi.nprobe_candidates(8, 256, tune=False) == [8]
    assert vi.nprobe_candidates(8, None, tune=True) == [None]


def test_serialised_index_round_trips_with_a_stable_checksum():
    vectors = unit_vectors(50)
    index = vi.add_to_shard(vi.serialize(vi.train_empty_index("IDMap2,Flat", 16, vectors[:0])),
                            np.arange(50, dtype=np.int64), vectors)
    data = vi.serialize(index)
    assert vi.sha256_hex(vi.serialize(vi.deserialize(data))) == vi.sha256_hex(data)
    assert vi.deserialize(data).ntotal == 50
