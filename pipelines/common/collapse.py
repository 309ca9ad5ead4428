"""Is an embedding degenerate? Collapse measures for the trainer's check after each phase and the index's refusal
to publish (plain numpy, no stage).

A network trained from random weights can map every poster to (almost) one vector: every pairwise cosine 1.0, every
neighbour list a tie, and retrieval measures that still look fine (ties break by row order). Three measures see it:

- spread: sqrt of the total variance of the unit vectors, sqrt(Σ_d var_d) = sqrt(1 − |mean|²) ∈ [0, 1]; 0 when
  every vector is the same, ~1 when they point every way (it does not depend on the dimension);
- effective rank (Roy & Vetterli, 2007): exp of the entropy of the centred vectors' normalised singular values,
  between 1 (all variation along one direction) and the dimension; 0 when there is no variation at all;
- tied share: the share of queries whose top-k neighbour scores all lie within `TIE_TOLERANCE` of each other.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from pipelines.common.retrieval_metrics import nearest_neighbours, normalise

TIE_TOLERANCE = 1e-5  # cosine scores this close are one score (float32 inner products differ by ~1e-7)
_NO_VARIATION = 1e-9  # total variance below this: no direction to speak of


def spread(vectors: np.ndarray) -> float:
    """sqrt(total variance) of the L2-normalised rows [N, d]: 0 (all equal) … 1."""
    unit = normalise(vectors).astype(np.float64)
    return float(np.sqrt(max(unit.var(axis=0).sum(), 0.0)))


def effective_rank(vectors: np.ndarray) -> float:
    """exp(entropy of the normalised singular values) of the centred, L2-normalised rows [N, d]; 0 when they are
    all one vector."""
    unit = normalise(vectors).astype(np.float64)
    centred = unit - unit.mean(axis=0)
    if (centred ** 2).sum() / max(len(unit), 1) < _NO_VARIATION:
        return 0.0
    singular = np.linalg.svd(centred, compute_uv=False)
    shares = singular[singular > 0] / singular.sum()
    return float(np.exp(-(shares * np.log(shares)).sum()))


def tied_share(scores: np.ndarray, valid: Optional[np.ndarray] = None, tolerance: float = TIE_TOLERANCE) -> float:
    """Share of rows of `scores` [m, k] (each query's top-k neighbour scores) whose scores all lie within
    `tolerance`. `valid` [m, k] marks real neighbours (a small index pads with fillers); a row with fewer than two
    counts as untied."""
    scores = np.asarray(scores, np.float64)
    valid = np.ones(scores.shape, bool) if valid is None else np.asarray(valid, bool)
    if not len(scores):
        return 0.0
    high = np.where(valid, scores, -np.inf).max(axis=1)
    low = np.where(valid, scores, np.inf).min(axis=1)
    tied = (valid.sum(axis=1) >= 2) & (high - low <= tolerance)
    return float(tied.mean())


def neighbour_scores(vectors: np.ndarray, k: int) -> np.ndarray:
    """Each row's cosine scores [N, k] with its k nearest other rows, nearest first."""
    unit = normalise(vectors)
    neighbours = nearest_neighbours(unit, k)
    return np.einsum("nd,nkd->nk", unit, unit[neighbours])


def collapse_measures(vectors: np.ndarray, k: int) -> dict:
    """{"spread", "effective_rank", "tied_share"} of an embedding's rows [N, d] (N > k), each rounded to 6 digits."""
    return {"spread": round(spread(vectors), 6), "effective_rank": round(effective_rank(vectors), 6),
            "tied_share": round(tied_share(neighbour_scores(vectors, k)), 6)}


def collapse_problems(measures: dict, min_spread: Optional[float], min_effective_rank: Optional[float],
                      max_tied_share: Optional[float]) -> list[str]:
    """What is degenerate about `measures` (`collapse_measures`), one phrase each; [] when nothing. A None bound
    is not checked."""
    problems = []
    if min_spread is not None and measures["spread"] < min_spread:
        problems.append(f"spread {measures['spread']:.2g} < {min_spread:g}")
    if min_effective_rank is not None and measures["effective_rank"] < min_effective_rank:
        problems.append(f"effective rank {measures['effective_rank']:.3g} < {min_effective_rank:g}")
    if max_tied_share is not None and measures["tied_share"] > max_tied_share:
        problems.append(f"{measures['tied_share']:.0%} of queries' top-k scores tied > {max_tied_share:.0%}")
    return problems
