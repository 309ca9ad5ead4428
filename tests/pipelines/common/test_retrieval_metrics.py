"""The offline measures, each against a case worked by hand (docstrings say how the numbers were derived)."""
import math

import numpy as np
import pytest

from pipelines.common.retrieval_metrics import (
    catalog_coverage,
    cold_start_coverage,
    exposure_counts,
    genre_entropy,
    genre_pair_distances,
    gini,
    hit_rate_at_k,
    intra_list_distance,
    ndcg_at_k,
    nearest_neighbours,
    ranking_scores,
    recall_at_k,
    retrieval_metrics,
    separation,
    top_k,
)


def _at_degrees(*degrees):
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


# --- retrieval -------------------------------------------------------------------------------------------------
def test_hand_computed_example():
    """Posters at 0°, 10°, 25°, 180° with genres {A}, {B}, {A}, {A, B}; k = 2.

    Full rankings by angle and relevance (shares a genre with the query), R = relevant posters:
      q0 → p1 (no), p2 (yes), p3 (yes); R=2: P@2 = 1/2, R@2 = 1/2, AP@2 = (1/2)/2 = 0.25,
            NDCG@2 = (1/log2 3) / (1 + 1/log2 3) = 0.3869, mAP@R = (0 + 1/2)/2 = 0.25
      q1 → p0 (no), p2 (no), p3 (yes);  R=1: all 0 (the hit is at rank 3 > k and > R)
      q2 → p1 (no), p0 (yes), p3 (yes); R=2: as q0
      q3 → p2 (yes), p1 (yes), p0 (yes); R=3: P@2 = 1, R@2 = 2/3, AP@2 = 2/2 = 1, NDCG@2 = 1, mAP@R = 1
    Means: precision 0.5, recall (0.5 + 0.5 + 2/3)/4 = 0.4167, MAP 0.375, NDCG (2 · 0.3869 + 1)/4 = 0.4434,
    mAP@R 1.5/4 = 0.375.
    """
    labels = np.array([[1, 0], [0, 1], [1, 0], [1, 1]])
    metrics = retrieval_metrics(_at_degrees(0, 10, 25, 180), labels, k=2, genres=["A", "B"])
    assert {key: value for key, value in metrics.items() if key != "by_genre"} == {
        "precision_at_2": 0.5, "map_at_2": 0.375, "recall_at_2": 0.4167, "ndcg_at_2": 0.4434, "map_at_r": 0.375,
        "queries": 4}


def test_by_genre_counts_a_neighbour_relevant_when_it_carries_that_genre():
    """Same posters. Genre B: queries p1 and p3 (the only B posters), each with R = 1.
      q1 → p0, p2, p3: the B poster is at rank 3 → P@2 = 0, AP = 0, mAP@R = 0
      q3 → p2, p1, p0: the B poster is at rank 2 → P@2 = 1/2, R@2 = 1, AP@2 = (1/2)/1 = 0.5,
                                                    NDCG@2 = (1/log2 3)/1 = 0.6309, mAP@R (R=1, rank 1 misses) = 0
    Means: precision 0.25, recall 0.5, MAP 0.25, NDCG 0.3155, mAP@R 0.
    """
    labels = np.array([[1, 0], [0, 1], [1, 0], [1, 1]])
    by_genre = retrieval_metrics(_at_degrees(0, 10, 25, 180), labels, k=2, genres=["A", "B"])["by_genre"]
    assert by_genre["B"] == {"precision_at_2": 0.25, "map_at_2": 0.25, "recall_at_2": 0.5, "ndcg_at_2": 0.3155,
                             "map_at_r": 0.0, "queries": 2}
    assert by_genre["A"]["queries"] == 3


def test_ties_go_to_the_lower_index():
    """Rows 1, 2 and 3 are the same vector: for query 0 they tie, and come back in index order."""
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    assert nearest_neighbours(vectors, k=4)[0].tolist() == [4, 1, 2, 3]
    assert top_k(vectors[:1], vectors, k=2).tolist() == [[0, 4]]


def test_ranking_scores_of_a_query_without_relevant_rows_are_zero():
    scores = ranking_scores(np.array([[False, False, False]]), k=2)
    assert {name: float(values[0]) for name, values in scores.items()} == {
        "precision": 0.0, "recall": 0.0, "ap": 0.0, "ndcg": 0.0, "map_r": 0.0}


def test_separated_genres_score_one_and_random_scores_the_base_rate():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.eye(3), 20, axis=0)
    clustered = labels * 10 + rng.normal(0, 0.1, labels.shape)
    metrics = retrieval_metrics(clustered, labels)
    assert metrics["precision_at_10"] == metrics["map_at_10"] == metrics["map_at_r"] == metrics["ndcg_at_10"] == 1.0
    # Random directions: about 19/59 of the other posters share the query's genre.
    random = retrieval_metrics(rng.normal(size=(60, 8)), labels)
    assert 0.2 < random["precision_at_10"] < 0.45


def test_a_poster_is_never_its_own_neighbour():
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    neighbours = nearest_neighbours(embeddings, k=2)
    assert neighbours.tolist() == [[1, 2], [0, 2], [0, 1]]


def test_scale_does_not_matter_cosine_does():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(30, 4))
    labels = rng.integers(0, 2, (30, 3))
    scaled = embeddings * rng.uniform(0.1, 10, (30, 1))
    assert retrieval_metrics(embeddings, labels) == retrieval_metrics(scaled, labels)


def test_needs_more_posters_than_k():
    with pytest.raises(ValueError, match="more than 10"):
        retrieval_metrics(np.ones((10, 2)), np.ones((10, 1)))


# --- recommendation --------------------------------------------------------------------------------------------
RANKED = [["a", "b", "c"], ["d", "a", "b"], ["c", "a", "d"]]
HELD_OUT = [{"c"}, {"x"}, {"c", "d"}]  # user 1's held-out title is one the lists never show


def test_hit_rate_recall_and_ndcg_by_hand():
    """k = 2: user 0's "c" is at rank 3 (miss); user 1 misses; user 2 has "c" at rank 1 of two held-out.
    hit rate@2 = 1/3; recall@2 = (0 + 0 + 1/2)/3 = 1/6; NDCG@2 = (0 + 0 + 1/(1 + 1/log2 3))/3.
    k = 3: user 0 hits at rank 3, user 2 finds both → hit rate 2/3, recall (1 + 0 + 1)/3,
    NDCG@3 user 0 = (1/log2 4)/1 = 0.5, user 2 = (1 + 1/log2 4)/(1 + 1/log2 3)."""
    assert hit_rate_at_k(RANKED, HELD_OUT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, HELD_OUT, 2) == pytest.approx(1 / 6)
    assert ndcg_at_k(RANKED, HELD_OUT, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)) / 3)
    assert hit_rate_at_k(RANKED, HELD_OUT, 3) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, HELD_OUT, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(RANKED, HELD_OUT, 3) == pytest.approx((0.5 + 1.5 / (1 + 1 / math.log2(3))) / 3)


def test_a_user_with_one_held_out_event_has_recall_equal_to_hit():
    assert recall_at_k([["a", "b"]], [{"b"}], 2) == hit_rate_at_k([["a", "b"]], [{"b"}], 2) == 1.0
    assert ndcg_at_k([["a", "b"]], [{"b"}], 2) == pytest.approx(1 / math.log2(3))
    assert hit_rate_at_k([], [], 10) == recall_at_k([], [], 10) == ndcg_at_k([], [], 10) == 0.0


def test_coverage_exposure_and_cold_start_by_hand():
    """k = 2 shows a, b, d, a, c, a: a 3 times, b, c, d once, e never → coverage 4/5; cold {d, e}: d shown."""
    catalog = ["a", "b", "c", "d", "e"]
    assert exposure_counts(RANKED, catalog, 2).tolist() == [3, 1, 1, 1, 0]
    assert catalog_coverage(RANKED, catalog, 2) == pytest.approx(0.8)
    assert cold_start_coverage(RANKED, ["d", "e"], 2) == 0.5
    assert cold_start_coverage(RANKED, [], 2) == 0.0


def test_gini_by_hand():
    """Sorted [0, 1, 1, 1, 3], n = 5, sum 6: sum (2i − n − 1) x_i = (−4·0) + (−2·1) + 0 + 2·1 + 4·3 = 12
    → 12 / (5 · 6) = 0.4. Equal exposure: 0; one title holds everything: (n − 1)/n."""
    assert gini(np.array([3, 1, 1, 1, 0])) == pytest.approx(0.4)
    assert gini(np.ones(4)) == 0.0
    assert gini(np.array([0, 0, 0, 5])) == pytest.approx(0.75)
    assert gini(np.zeros(3)) == 0.0


def test_intra_list_distance_and_genre_entropy_by_hand():
    """List 1: 0°, 90°, 180° → distances 1, 2, 1 → mean 4/3; list 2: two equal vectors → 0; a one-item list is
    left out. Genres: {A, B} then {A} → counts A 2, B 1 → H = −(2/3 log2 2/3 + 1/3 log2 1/3) = 0.9183;
    a list of one genre → 0."""
    lists = [_at_degrees(0, 90, 180), _at_degrees(5, 5), _at_degrees(0)]
    assert intra_list_distance(lists) == pytest.approx((4 / 3 + 0) / 2, abs=1e-6)
    assert genre_entropy([[["A", "B"], ["A"]], [["C"], ["C"]]]) == pytest.approx((0.918296 + 0) / 2, abs=1e-6)


# --- distances -------------------------------------------------------------------------------------------------
def test_genre_pair_distances_and_separation_by_hand():
    """Posters at 0°, 0°, 90°, 180° with genres {A}, {A}, {B}, {A}: same-genre pairs (0,1) d=0, (0,3) d=2, (1,3) d=2;
    different pairs (0,2), (1,2), (2,3) all d=1. Of the 9 (same, different) comparisons the same pair is closer 3
    times and farther 6 times → AUC = 3/9; means 4/3 and 1. With a tie: same [0.1, 0.2] against different
    [0.1, 0.9]: ½ (tie) + 1 + 0 + 1 over 4 comparisons."""
    same, different = genre_pair_distances(_at_degrees(0, 0, 90, 180), np.array([[1, 0], [1, 0], [0, 1], [1, 0]]))
    assert np.allclose(same, [0, 2, 2], atol=1e-6) and np.allclose(different, [1, 1, 1], atol=1e-6)
    result = separation(same, different)
    assert result["auc"] == pytest.approx(1 / 3, abs=1e-4)
    assert result["mean_same"] == pytest.approx(4 / 3, abs=1e-4) and result["mean_different"] == pytest.approx(1.0)
    assert separation(np.array([0.1, 0.2]), np.array([0.1, 0.9]))["auc"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert separation(np.array([]), np.array([1.0]))["auc"] is None


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_queries_scored_in_chunks_give_the_same_measures(monkeypatch, chunk):
    """Memory is O(chunk × N): the chunked computation must equal one chunk holding every query."""
    from pipelines.common import retrieval_metrics as measures

    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(150, 6)).astype(np.float32)
    labels = (rng.random((150, 5)) < 0.25).astype(np.float32)
    whole = measures.retrieval_metrics(embeddings, labels)
    monkeypatch.setattr(measures, "QUERY_CHUNK", chunk)
    assert measures.retrieval_metrics(embeddings, labels) == whole
