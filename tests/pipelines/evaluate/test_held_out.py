"""Candidates against held-out watches: the split by timestamp, the baselines, the measures, by hand."""
import numpy as np
import pytest

from pipelines.candidates.watch_history import WatchEvent
from pipelines.evaluate.held_out import (
    evaluate_candidates,
    exact_search,
    hold_out_last,
    popularity_candidates,
    random_candidates,
)

EMBEDDED = {"a", "b", "c", "d", "e", "f"}


def _events():
    return [
        WatchEvent("u1", "b", 300.0, 1.0), WatchEvent("u1", "a", 100.0, 1.0), WatchEvent("u1", "c", 200.0, 1.0),
        WatchEvent("u2", "d", 50.0, 1.0),  # one event: nothing left to build candidates from
        WatchEvent("u3", "a", 10.0, 1.0), WatchEvent("u3", "a", 20.0, 1.0),  # the last watch is a re-watch
        WatchEvent("u4", "e", 5.0, 1.0), WatchEvent("u4", "f", 5.0, 1.0),  # a tie: the later row is the last
        WatchEvent("u5", "c", None, 1.0), WatchEvent("u5", "a", 1.0, 1.0),  # undated watches come first
    ]


def test_the_last_watch_by_timestamp_is_held_out_and_short_users_are_counted():
    split = hold_out_last(_events(), 1, EMBEDDED)
    assert split.held_out == {"u1": {"b"}, "u4": {"f"}, "u5": {"a"}}
    assert [e.title_id for e in split.rest["u1"]] == ["a", "c"]
    assert (split.users, split.too_short, split.nothing_to_find) == (5, 1, 1)


def test_held_out_titles_without_an_embedding_are_dropped():
    split = hold_out_last([WatchEvent("u", "a", 1.0, 1.0), WatchEvent("u", "zz", 2.0, 1.0)], 1, EMBEDDED)
    assert split.held_out == {} and split.nothing_to_find == 1


def test_baselines_never_return_what_the_user_watched():
    split = hold_out_last(_events(), 1, EMBEDDED)
    catalog = sorted(EMBEDDED)
    popular = popularity_candidates(split, catalog, k=3)
    # Users who watched each title, held-out watches left out (unscored users' watches all count): a by u1 and
    # u3, c by u1 and u5, d by u2, e by u4; b and f by nobody. Ties by title_id: a, c, d, e, b, f.
    assert popular["u1"] == ["d", "e", "b"] and popular["u4"] == ["a", "c", "d"]
    assert len(split.training) == len(_events()) - 3
    lists = random_candidates(split, catalog, k=4, seed=1)
    assert lists == random_candidates(split, catalog, k=4, seed=1)
    assert all(not set(lists[u]) & {e.title_id for e in split.rest[u]} and len(lists[u]) == 4 for u in lists)


def test_content_candidates_beat_the_baselines_when_taste_is_in_the_embedding():
    """Two clusters of titles; each user watched two of one cluster and their held-out title is the third."""
    vectors = {"a1": [1, 0], "a2": [0.99, 0.1], "a3": [0.98, 0.2], "b1": [0, 1], "b2": [0.1, 0.99], "b3": [0.2, 0.98]}
    vectors = {t: np.array(v, np.float32) / np.linalg.norm(v) for t, v in vectors.items()}
    events = [WatchEvent("ua", "a1", 1.0, 1.0), WatchEvent("ua", "a2", 2.0, 1.0), WatchEvent("ua", "a3", 3.0, 1.0),
              WatchEvent("ub", "b1", 1.0, 1.0), WatchEvent("ub", "b2", 2.0, 1.0), WatchEvent("ub", "b3", 3.0, 1.0)]
    genres = {t: [t[0].upper()] for t in vectors}
    search = exact_search(sorted(vectors), np.stack([vectors[t] for t in sorted(vectors)]))
    result = evaluate_candidates(events, vectors, genres, search, k=1, n_last=1, half_life_days=None, seed=0)
    content = result["methods"]["content"]
    assert result["users_scored"] == 2
    assert content["hit_rate_at_1"] == content["recall_at_1"] == content["ndcg_at_1"] == 1.0
    assert content["catalog_coverage"] == pytest.approx(2 / 6, abs=1e-4) and content["genre_entropy_bits"] == 0.0
    assert content["cold_start_coverage"] == 1.0  # a3 and b3 nobody watched before
    # Most-watched: a1, a2, b1, b2 tie on one watch each; ua's first unseen is b1, ub's a1: both miss, and the
    # never-watched a3 and b3 are never shown.
    most_watched = result["methods"]["most_watched"]
    assert most_watched["hit_rate_at_1"] == 0.0 and most_watched["cold_start_coverage"] == 0.0
