"""Candidates against held-out watches: each user's last watches are hidden, candidates come from the rest.

    history ─▶ hold_out_last ─┬─ the rest ─▶ content candidates (the candidates stage's own user query + search)
                              │             most-watched and random baselines (watched titles excluded alike)
                              └─ held out ─▶ hit rate@k, recall@k, NDCG@k; coverage, Gini, diversity, cold start

A user's watches are ordered by timestamp (undated ones first, then file order); the last `n_last` are held out.
Held-out titles the user also watched earlier (never recommended back) or that have no embedding (never
recommendable) are dropped; users left with no earlier watch or nothing to find are counted, not scored, and
all their watches count as history (the most-watched ranking, which titles are cold).
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pipelines.candidates.pipeline import top_k_excluding
from pipelines.candidates.watch_history import WatchEvent, user_query
from pipelines.common import retrieval_metrics as rm

Search = Callable[[np.ndarray, int], tuple[list[list[str]], np.ndarray]]


@dataclass
class HoldOut:
    rest: dict[str, list[WatchEvent]] = field(default_factory=dict)  # user → earlier watches (scored users only)
    training: list[WatchEvent] = field(default_factory=list)  # every watch not held out, of every user
    held_out: dict[str, set[str]] = field(default_factory=dict)  # user → the titles to find
    users: int = 0
    too_short: int = 0  # users with no watch left once the last ones are held out
    nothing_to_find: int = 0  # users whose held-out titles were all re-watches or not embedded


def hold_out_last(events: Sequence[WatchEvent], n_last: int, embedded: set[str]) -> HoldOut:
    """Splits every user's watches into the earlier ones and the last `n_last` (see the module docstring)."""
    by_user: dict[str, list[tuple[int, WatchEvent]]] = {}
    for number, event in enumerate(events):
        by_user.setdefault(event.user_id, []).append((number, event))
    split = HoldOut(users=len(by_user))
    for user, numbered in sorted(by_user.items()):
        ordered = [e for _, e in sorted(numbered, key=lambda p: (p[1].timestamp is not None, p[1].timestamp or 0,
                                                                  p[0]))]
        rest, last = ordered[:-n_last], ordered[-n_last:]
        earlier = {e.title_id for e in rest}
        truth = {e.title_id for e in last if e.title_id not in earlier and e.title_id in embedded}
        if not rest or not truth:  # not scored: all of the user's watches are history the others learn from
            split.too_short += not rest
            split.nothing_to_find += bool(rest)
            split.training.extend(ordered)
            continue
        split.rest[user], split.held_out[user] = rest, truth
        split.training.extend(rest)
    return split


def exact_search(title_ids: Sequence[str], vectors: np.ndarray) -> Search:
    """A search over `vectors` by cosine (the index's answers when it is Flat), same shape as the index's."""
    ids = np.asarray(title_ids, dtype=object)

    def search(queries: np.ndarray, depth: int):
        found = rm.top_k(queries, vectors, depth)
        return ids[found].tolist(), np.zeros(found.shape, np.float32)

    return search


def content_candidates(split: HoldOut, embeddings: dict[str, np.ndarray], search: Search, k: int,
                       half_life_days: Optional[float]) -> dict[str, list[str]]:
    """user → top-k titles, as `posters candidates` makes them from the earlier watches (an empty list when
    none of them is embedded)."""
    queries = {}
    for user, rest in split.rest.items():
        query = user_query(user, [(e, embeddings.get(e.title_id)) for e in rest], half_life_days)
        if hasattr(query, "vector"):
            queries[user] = query
    lists = {user: [] for user in split.rest}
    if queries:
        users = sorted(queries)
        depth = k + max(len(queries[u].watched) for u in users)
        found, scores = search(np.stack([queries[u].vector for u in users]), depth)
        for user, ids, row in zip(users, found, scores):
            lists[user] = [n["title_id"] for n in top_k_excluding(ids, row, queries[user].watched, k)]
    return lists


def popularity_candidates(split: HoldOut, catalog: Sequence[str], k: int) -> dict[str, list[str]]:
    """user → the k most-watched titles (by users who watched them, held-out watches left out; ties by
    title_id) the user has not seen."""
    counts = Counter(title for _, title in {(e.user_id, e.title_id) for e in split.training})
    ranked = sorted(catalog, key=lambda t: (-counts.get(t, 0), t))
    return {user: _first_unwatched(ranked, {e.title_id for e in rest}, k) for user, rest in split.rest.items()}


def random_candidates(split: HoldOut, catalog: Sequence[str], k: int, seed: int) -> dict[str, list[str]]:
    """user → k titles drawn at random (seeded per user) among those the user has not seen."""
    lists = {}
    for user, rest in split.rest.items():
        rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big")])
        # the permutation read lazily: k titles cost k (+ the user's watches), not a list of the whole catalog
        lists[user] = _first_unwatched((catalog[i] for i in rng.permutation(len(catalog))),
                                       {e.title_id for e in rest}, k)
    return lists


def _first_unwatched(ranked: Iterable[str], watched: set[str], k: int) -> list[str]:
    picked = []
    for title in ranked:
        if title not in watched:
            picked.append(title)
            if len(picked) == k:
                break
    return picked


def candidate_measures(lists: dict[str, list[str]], split: HoldOut, catalog: Sequence[str],
                       embeddings: dict[str, np.ndarray], genres: dict[str, Sequence[str]], k: int) -> dict:
    """The recommendation measures of one method's lists (users in `split.held_out` order)."""
    users = sorted(split.held_out)
    ranked, truth = [lists.get(u, []) for u in users], [split.held_out[u] for u in users]
    watched = {e.title_id for e in split.training}
    vectors = [np.stack([embeddings[t] for t in items if t in embeddings]) for items in ranked if items]
    return {
        f"hit_rate_at_{k}": round(rm.hit_rate_at_k(ranked, truth, k), rm.DIGITS),
        f"recall_at_{k}": round(rm.recall_at_k(ranked, truth, k), rm.DIGITS),
        f"ndcg_at_{k}": round(rm.ndcg_at_k(ranked, truth, k), rm.DIGITS),
        "catalog_coverage": round(rm.catalog_coverage(ranked, catalog, k), rm.DIGITS),
        "gini_of_exposure": round(rm.gini(rm.exposure_counts(ranked, catalog, k)), rm.DIGITS),
        "intra_list_distance": round(rm.intra_list_distance(vectors), rm.DIGITS),
        "genre_entropy_bits": round(rm.genre_entropy([[genres.get(t, ()) for t in items] for items in ranked]),
                                    rm.DIGITS),
        "cold_start_coverage": round(rm.cold_start_coverage(ranked, [t for t in catalog if t not in watched], k),
                                     rm.DIGITS),
        "users_without_candidates": sum(1 for items in ranked if not items),
    }


def evaluate_candidates(events: Sequence[WatchEvent], embeddings: dict[str, np.ndarray],
                        genres: dict[str, Sequence[str]], search: Search, k: int, n_last: int,
                        half_life_days: Optional[float], seed: int) -> dict:
    """{"users": …, "methods": {"content" | "most_watched" | "random": measures}} for a watch history."""
    catalog = sorted(embeddings)
    split = hold_out_last(events, n_last, set(catalog))
    methods = {
        "content": content_candidates(split, embeddings, search, k, half_life_days),
        "most_watched": popularity_candidates(split, catalog, k),
        "random": random_candidates(split, catalog, k, seed),
    }
    return {"k": k, "held_out_per_user": n_last, "users": split.users, "users_scored": len(split.held_out),
            "users_too_short": split.too_short, "users_nothing_to_find": split.nothing_to_find,
            "methods": {name: candidate_measures(lists, split, catalog, embeddings, genres, k)
                        for name, lists in methods.items()}}
