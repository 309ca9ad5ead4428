"""Retrieval metrics of an embedding: precision@k and MAP@k over cosine neighbours, relevance = a shared genre."""
import numpy as np
import pytest

from trainer.evaluate import nearest_neighbours, retrieval_metrics


def _at_degrees(*degrees):
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_hand_computed_example():
    """Posters at 0°, 10°, 25°, 180° with genres {A}, {B}, {A}, {A, B}; k = 2.

    Nearest two by angle and their relevance (shares a genre with the query):
      q0 → p1 (no), p2 (yes); 2 relevant in total: P@2 = 1/2, AP = (1/2 · 1) / min(2, 2) = 0.25
      q1 → p0 (no), p2 (no);  1 relevant in total: P@2 = 0,   AP = 0
      q2 → p1 (no), p0 (yes); 2 relevant in total: P@2 = 1/2, AP = 0.25
      q3 → p2 (yes), p1 (yes); 3 relevant:         P@2 = 1,   AP = (1 + 1) / min(2, 3) = 1
    Means: precision 2/4 = 0.5, MAP 1.5/4 = 0.375.
    """
    labels = np.array([[1, 0], [0, 1], [1, 0], [1, 1]])
    metrics = retrieval_metrics(_at_degrees(0, 10, 25, 180), labels, k=2)
    assert metrics == {"precision_at_2": 0.5, "map_at_2": 0.375, "queries": 4}


def test_separated_genres_score_one_and_random_scores_the_base_rate():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.eye(3), 20, axis=0)
    clustered = labels * 10 + rng.normal(0, 0.1, labels.shape)
    assert retrieval_metrics(clustered, labels) == {"precision_at_10": 1.0, "map_at_10": 1.0, "queries": 60}
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


def _unchunked_metrics(embeddings, labels, k=10):
    """The N × N computation (every query at once), the reference for the chunked one."""
    labels = np.asarray(labels) > 0
    vectors = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    shares = labels.astype(np.float32) @ labels.T.astype(np.float32) > 0
    np.fill_diagonal(shares, False)
    relevant = np.take_along_axis(shares, neighbours, axis=1)
    precision_at_rank = np.cumsum(relevant, axis=1) / np.arange(1, k + 1)
    attainable = np.minimum(shares.sum(axis=1), k)
    ap = np.where(attainable > 0, (precision_at_rank * relevant).sum(axis=1) / np.maximum(attainable, 1), 0.0)
    return {f"precision_at_{k}": round(float(relevant.mean()), 4), f"map_at_{k}": round(float(ap.mean()), 4),
            "queries": len(labels)}


@pytest.mark.parametrize("chunk", [1, 7, 64, 1024])
def test_chunked_metrics_equal_the_unchunked_ones(monkeypatch, chunk):
    from trainer import evaluate

    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(150, 6)).astype(np.float32)
    labels = (rng.random((150, 5)) < 0.25).astype(np.float32)
    monkeypatch.setattr(evaluate, "QUERY_CHUNK", chunk)
    assert retrieval_metrics(embeddings, labels) == _unchunked_metrics(embeddings, labels)
