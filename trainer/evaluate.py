"""Retrieval quality of an embedding on the eval split: do a poster's nearest neighbours share its genres?

For every eval poster (the query) the other eval posters are ranked by cosine similarity (the angular metric
the index serves). A neighbour is relevant when it shares at least one genre with the query.

- `precision_at_10`: mean over queries of the share of the 10 nearest neighbours that are relevant;
- `map_at_10`: mean over queries of AP@10 = sum_i P@i * rel_i / min(10, relevant posters in the split),
  the usual truncated average precision (a query with no relevant poster scores 0).
"""
from __future__ import annotations

import numpy as np

QUERY_CHUNK = 1024  # queries scored at once: the similarity block is QUERY_CHUNK × N floats


def normalise(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def nearest_neighbours(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Indices [N, k] of each row's k most cosine-similar other rows, nearest first (ties: lower index)."""
    vectors = normalise(np.asarray(embeddings, np.float32))
    return np.concatenate([_chunk_neighbours(vectors, start, k) for start in range(0, len(vectors), QUERY_CHUNK)])


def _chunk_neighbours(vectors: np.ndarray, start: int, k: int) -> np.ndarray:
    similarity = vectors[start:start + QUERY_CHUNK] @ vectors.T  # [chunk, N]
    rows = np.arange(similarity.shape[0])
    similarity[rows, start + rows] = -np.inf  # a poster is not its own neighbour
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def retrieval_metrics(embeddings: np.ndarray, labels: np.ndarray, k: int = 10) -> dict:
    """`embeddings` [N, d] and multi-hot `labels` [N, G] → {"precision_at_<k>", "map_at_<k>", "queries"}.

    Queries are scored `QUERY_CHUNK` at a time: memory is O(QUERY_CHUNK × N), never N × N.
    """
    labels = np.asarray(labels) > 0
    if len(labels) <= k:
        raise ValueError(f"retrieval@{k} needs more than {k} eval posters, got {len(labels)}")
    vectors = normalise(np.asarray(embeddings, np.float32))
    multi_hot = labels.astype(np.float32)
    hits, average_precision = [], []
    for start in range(0, len(labels), QUERY_CHUNK):
        neighbours = _chunk_neighbours(vectors, start, k)
        shares = multi_hot[start:start + QUERY_CHUNK] @ multi_hot.T > 0  # [chunk, N]: shares a genre
        rows = np.arange(shares.shape[0])
        shares[rows, start + rows] = False
        relevant = np.take_along_axis(shares, neighbours, axis=1)  # [chunk, k], in rank order
        precision_at_rank = np.cumsum(relevant, axis=1) / np.arange(1, k + 1)
        attainable = np.minimum(shares.sum(axis=1), k)
        average_precision.append(np.where(attainable > 0, (precision_at_rank * relevant).sum(axis=1)
                                          / np.maximum(attainable, 1), 0.0))
        hits.append(relevant.sum(axis=1))
    return {f"precision_at_{k}": round(float(np.concatenate(hits).sum() / (len(labels) * k)), 4),
            f"map_at_{k}": round(float(np.concatenate(average_precision).mean()), 4),
            "queries": int(len(labels))}
