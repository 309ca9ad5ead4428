"""Collapse measures: spread, effective rank and tied neighbour scores tell a collapsed embedding from a healthy one."""
import numpy as np
import pytest

from pipelines.common.collapse import (
    collapse_measures,
    collapse_problems,
    effective_rank,
    neighbour_scores,
    spread,
    tied_share,
)


def _random_unit(n, dim, seed=0):
    vectors = np.random.default_rng(seed).normal(size=(n, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_one_vector_everywhere_has_no_spread_no_rank_and_every_query_tied():
    """The issue's collapse: every embedding the same vector up to float noise of ~1e-7."""
    vectors = np.repeat(_random_unit(1, 16), 50, axis=0) + np.random.default_rng(1).normal(0, 1e-7, (50, 16))
    measures = collapse_measures(vectors, k=10)
    assert measures["spread"] < 1e-5 and measures["tied_share"] == 1.0
    assert measures["effective_rank"] == 0.0
    assert collapse_problems(measures, 0.01, 1.5, 0.5) == [
        f"spread {measures['spread']:.2g} < 0.01", "effective rank 0 < 1.5", "100% of queries' top-k scores tied > 50%"]


def test_random_directions_spread_fully_and_do_not_tie():
    """Uniform directions: total variance 1 − |mean|² ≈ 1; the effective rank is near the dimension."""
    vectors = _random_unit(400, 8)
    measures = collapse_measures(vectors, k=10)
    assert measures["spread"] == pytest.approx(1.0, abs=0.02)
    assert 7.0 < measures["effective_rank"] <= 8.0
    assert measures["tied_share"] == 0.0
    assert collapse_problems(measures, 0.01, 1.5, 0.5) == []


def test_two_vectors_for_everything_have_effective_rank_one():
    """Half the rows one vector, half another (orthogonal): centred, all variation lies along their difference,
    so the effective rank is 1 (below a bound of 1.5) although the spread is sqrt(1 − 1/2) ≈ 0.71."""
    vectors = np.repeat(np.eye(4)[:2], 20, axis=0)
    assert effective_rank(vectors) == pytest.approx(1.0, abs=1e-6)
    assert spread(vectors) == pytest.approx(np.sqrt(0.5), abs=1e-6)


def test_tied_share_counts_only_real_neighbours():
    scores = np.array([[0.9, 0.9, 0.9], [0.9, 0.8, 0.7], [0.5, -1e30, -1e30]])
    assert tied_share(scores) == pytest.approx(1 / 3)
    valid = np.array([[True, True, True], [True, True, True], [True, False, False]])
    assert tied_share(scores, valid) == pytest.approx(1 / 3)  # one real neighbour is no tie
    assert tied_share(np.array([[0.9, 0.9 - 2e-5]])) == 0.0  # beyond the tolerance


def test_neighbour_scores_are_the_nearest_other_rows_cosines():
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    np.testing.assert_allclose(neighbour_scores(vectors, 2), [[0.8, 0.0], [0.8, 0.6], [0.6, 0.0]], atol=1e-6)


def test_a_bound_of_none_is_not_checked():
    measures = {"spread": 0.0, "effective_rank": 0.0, "tied_share": 1.0}
    assert collapse_problems(measures, None, None, None) == []
