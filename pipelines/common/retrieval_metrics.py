"""Offline quality measures of an embedding and of the candidates it makes: plain numpy, no stage, no Keras.

The trainer scores its eval split with `retrieval_metrics`; `posters evaluate` scores the published embeddings,
its reference points (random vectors, trivial image features) and the candidates with the same functions.

Retrieval (`retrieval_metrics`): every row is a query, the other rows are ranked by cosine similarity (the
angular metric the index serves; ties go to the lower row index). Overall, a neighbour is relevant when it
shares at least one genre with the query. `by_genre[g]` takes the queries that carry genre g and counts a
neighbour as relevant when it carries g too. With R the number of relevant rows for a query:

- precision@k = hits in the top k / k;  recall@k = hits in the top k / R;
- AP@k = sum_{i<=k} P@i · rel_i / min(k, R) (the usual truncated average precision; the trainer's `map_at_k`);
- mAP@R = (1/R) · sum_{i<=R} P@i · rel_i (Musgrave et al., "A Metric Learning Reality Check", 2020);
- NDCG@k = sum_{i<=k} rel_i / log2(i + 1), divided by the same sum for min(k, R) hits at the top.
A query with R = 0 scores 0 on every measure and still counts.

Recommendation (candidates against held-out watches): hit rate@k (share of users with at least one held-out
title in their top k), recall@k, NDCG@k, catalog coverage, Gini of exposure, intra-list diversity (mean pairwise
cosine distance, genre entropy) and cold-start coverage; each function says what goes in.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Optional

import numpy as np

QUERY_CHUNK = 1024  # queries ranked at once: the similarity block is QUERY_CHUNK × N floats
DIGITS = 4


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def top_k(queries: np.ndarray, database: np.ndarray, k: int, exclude: Optional[np.ndarray] = None) -> np.ndarray:
    """Row indices [m, k] of the k database rows most cosine-similar to each query, nearest first (ties: lower
    index). `exclude[i]`, when given and >= 0, is a database row query i never gets back (itself)."""
    queries, database = normalise(queries), normalise(database)
    found = np.empty((len(queries), min(k, len(database))), np.int64)
    for start in range(0, len(queries), QUERY_CHUNK):
        similarity = queries[start:start + QUERY_CHUNK] @ database.T
        if exclude is not None:
            rows = np.arange(similarity.shape[0])
            banned = exclude[start:start + len(rows)]
            similarity[rows[banned >= 0], banned[banned >= 0]] = -np.inf
        found[start:start + len(similarity)] = np.argsort(-similarity, axis=1, kind="stable")[:, :found.shape[1]]
    return found


def nearest_neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Indices [N, k] of each row's k most cosine-similar other rows, nearest first (ties: lower index)."""
    return top_k(embeddings, embeddings, k, exclude=np.arange(len(embeddings)))


# --- retrieval -------------------------------------------------------------------------------------------------
def ranking_scores(relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-query measures from `relevant` [n, N-1] (bool, every other row in rank order): precision@k,
    recall@k, AP@k, NDCG@k and mAP@R, each an array [n]."""
    relevant = np.asarray(relevant, bool)
    total = relevant.sum(axis=1)  # R
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision_at_rank = hits / ranks
    top, safe_total = relevant[:, :k], np.maximum(total, 1)
    attainable = np.minimum(total, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.maximum(attainable, 1) - 1]
    within_r = ranks[None, :] <= total[:, None]
    return {
        "precision": top.sum(axis=1) / k,
        "recall": np.where(total > 0, top.sum(axis=1) / safe_total, 0.0),
        "ap": np.where(total > 0, (precision_at_rank[:, :k] * top).sum(axis=1) / np.maximum(attainable, 1), 0.0),
        "ndcg": np.where(total > 0, (top * discounts[:top.shape[1]]).sum(axis=1) / ideal, 0.0),
        "map_r": np.where(total > 0, (precision_at_rank * relevant * within_r).sum(axis=1) / safe_total, 0.0),
    }


def _summarise(scores: dict[str, list[np.ndarray]], k: int) -> dict:
    joined = {name: np.concatenate(parts) if parts else np.zeros(0) for name, parts in scores.items()}
    mean = {name: round(float(values.mean()), DIGITS) if len(values) else 0.0 for name, values in joined.items()}
    return {f"precision_at_{k}": mean["precision"], f"map_at_{k}": mean["ap"], f"recall_at_{k}": mean["recall"],
            f"ndcg_at_{k}": mean["ndcg"], "map_at_r": mean["map_r"], "queries": int(len(joined["precision"]))}


def retrieval_metrics(embeddings: np.ndarray, labels: np.ndarray, k: int = 10,
                      genres: Optional[Sequence[str]] = None) -> dict:
    """`embeddings` [N, d] and multi-hot `labels` [N, G] → overall measures (`precision_at_<k>`, `map_at_<k>`,
    `recall_at_<k>`, `ndcg_at_<k>`, `map_at_r`, `queries`) and `by_genre` (genre name, or column number when
    `genres` is not given → the same measures for the queries carrying that genre)."""
    labels = np.asarray(labels) > 0
    if len(labels) <= k:
        raise ValueError(f"retrieval@{k} needs more than {k} eval posters, got {len(labels)}")
    names = list(genres) if genres is not None else [str(g) for g in range(labels.shape[1])]
    vectors = normalise(embeddings)
    overall: dict[str, list] = {name: [] for name in ("precision", "recall", "ap", "ndcg", "map_r")}
    per_genre = {g: {name: [] for name in overall} for g in range(labels.shape[1])}
    label_float = labels.astype(np.float32)
    for start in range(0, len(labels), QUERY_CHUNK):  # memory O(QUERY_CHUNK × N), never N × N
        queries = np.arange(start, min(start + QUERY_CHUNK, len(labels)))
        rows = top_k(vectors[queries], vectors, len(labels) - 1, exclude=queries)  # every other row, ranked
        shares = (label_float[start:start + len(rows)] @ label_float.T > 0)
        for name, values in ranking_scores(np.take_along_axis(shares, rows, axis=1), k).items():
            overall[name].append(values)
        for g in range(labels.shape[1]):
            carriers = labels[start:start + len(rows), g]
            if carriers.any():
                for name, values in ranking_scores(labels[rows[carriers], g], k).items():
                    per_genre[g][name].append(values)
    result = _summarise(overall, k)
    result["by_genre"] = {names[g]: _summarise(scores, k) for g, scores in per_genre.items() if scores["ap"]}
    return result


# --- recommendation --------------------------------------------------------------------------------------------
def hit_rate_at_k(ranked: Sequence[Sequence[str]], held_out: Sequence[set], k: int) -> float:
    """Share of users (one list and one non-empty held-out set each) with a held-out title in their top k."""
    if not ranked:
        return 0.0
    return float(np.mean([bool(set(items[:k]) & truth) for items, truth in zip(ranked, held_out)]))


def recall_at_k(ranked: Sequence[Sequence[str]], held_out: Sequence[set], k: int) -> float:
    """Mean over users of (held-out titles in the top k) / (held-out titles)."""
    if not ranked:
        return 0.0
    return float(np.mean([len(set(items[:k]) & truth) / len(truth) for items, truth in zip(ranked, held_out)]))


def ndcg_at_k(ranked: Sequence[Sequence[str]], held_out: Sequence[set], k: int) -> float:
    """Mean binary NDCG@k: a held-out title at rank i scores 1/log2(i + 1), over the best possible order."""
    if not ranked:
        return 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for items, truth in zip(ranked, held_out):
        gains = np.array([title in truth for title in items[:k]], float)
        values.append((gains * discounts[:len(gains)]).sum() / discounts[:min(len(truth), k)].sum())
    return float(np.mean(values))


def exposure_counts(ranked: Iterable[Sequence[str]], catalog: Sequence[str], k: int) -> np.ndarray:
    """How many top-k lists each catalog title appears in, in `catalog` order (titles never shown: 0)."""
    counts = Counter(title for items in ranked for title in items[:k])
    return np.array([counts.get(title, 0) for title in catalog], np.float64)


def catalog_coverage(ranked: Iterable[Sequence[str]], catalog: Sequence[str], k: int) -> float:
    """Share of catalog titles that appear in at least one top-k list."""
    counts = exposure_counts(ranked, catalog, k)
    return float((counts > 0).mean()) if len(counts) else 0.0


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative `values`: 0 when all are equal, (n-1)/n when one holds everything."""
    values = np.sort(np.asarray(values, np.float64))
    n, total = len(values), values.sum()
    if n == 0 or total == 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) * values).sum() / (n * total))


def intra_list_distance(list_vectors: Sequence[np.ndarray]) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 − cos) of a list's items ([n_i, d] each);
    lists of fewer than two items are left out."""
    values = []
    for vectors in list_vectors:
        if len(vectors) < 2:
            continue
        unit = normalise(vectors)
        similarity = unit @ unit.T
        n = len(unit)
        values.append(float((1.0 - similarity)[np.triu_indices(n, 1)].mean()))
    return float(np.mean(values)) if values else 0.0


def genre_entropy(list_genres: Sequence[Sequence[Sequence[str]]]) -> float:
    """Mean over lists of the Shannon entropy (bits) of the genres of a list's items (each genre of each item
    counted once); a list of one genre scores 0."""
    values = []
    for items in list_genres:
        counts = np.array(list(Counter(g for genres in items for g in genres).values()), np.float64)
        if counts.sum() == 0:
            continue
        shares = counts / counts.sum()
        values.append(float(-(shares * np.log2(shares)).sum()))
    return float(np.mean(values)) if values else 0.0


def cold_start_coverage(ranked: Iterable[Sequence[str]], cold_titles: Iterable[str], k: int) -> float:
    """Share of cold titles (nobody watched them in the history the candidates came from) that appear in at
    least one top-k list: a content-based recommender can show them, a popularity list cannot."""
    cold = set(cold_titles)
    if not cold:
        return 0.0
    shown = {title for items in ranked for title in items[:k]}
    return len(cold & shown) / len(cold)


# --- distances -------------------------------------------------------------------------------------------------
def genre_pair_distances(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances (1 − cos) of every pair of rows, split into (pairs that share a genre, pairs that
    share none), both float32 and in row-major pair order."""
    unit = normalise(embeddings)
    labels = np.asarray(labels, np.float32) > 0
    upper = np.triu_indices(len(unit), 1)
    distances = (1.0 - unit @ unit.T)[upper]
    shares = (labels.astype(np.float32) @ labels.T.astype(np.float32) > 0)[upper]
    return distances[shares], distances[~shares]


def separation(same: np.ndarray, different: np.ndarray) -> dict:
    """How well distances tell same-genre pairs from the others: the means, d' = (mean_diff − mean_same) /
    sqrt((var_same + var_diff) / 2), and AUC = P(a same-genre pair is closer than a different one), ties ½."""
    same, different = np.asarray(same, np.float64), np.asarray(different, np.float64)
    if not len(same) or not len(different):
        return {"mean_same": None, "mean_different": None, "d_prime": None, "auc": None}
    spread = np.sqrt((same.var() + different.var()) / 2)
    ranks = _average_ranks(np.concatenate([same, different]))
    # Mann-Whitney: the "different" pairs' rank sum counts how often a different pair is farther.
    auc = (ranks[len(same):].sum() - len(different) * (len(different) + 1) / 2) / (len(same) * len(different))
    return {"mean_same": round(float(same.mean()), DIGITS), "mean_different": round(float(different.mean()), DIGITS),
            "d_prime": round(float((different.mean() - same.mean()) / spread), DIGITS) if spread > 0 else None,
            "auc": round(float(auc), DIGITS)}


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    totals = np.bincount(inverse, weights=ranks)
    return (totals / np.bincount(inverse))[inverse]
