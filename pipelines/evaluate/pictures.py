"""The report's charts as PNG bytes (matplotlib, no window): retrieval by genre beside the reference points,
distance histograms, near-duplicate recall, and the candidates beside their baselines."""
from __future__ import annotations

import io

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(figure) -> bytes:
    figure.tight_layout()
    figure.set_layout_engine(None)  # laid out: without an engine, savefig does not draw the figure twice
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def retrieval_by_genre_png(retrieval: dict[str, dict], k: int) -> bytes:
    """Grouped bars: precision@k per genre (x) for each embedding or reference point (one colour each)."""
    key = f"precision_at_{k}"
    genres = sorted({g for values in retrieval.values() for g in values.get("by_genre", {})})
    figure, axis = plt.subplots(figsize=(max(8, 0.9 * len(genres) + 3), 4.2))
    width = 0.8 / max(len(retrieval), 1)
    for i, (name, values) in enumerate(retrieval.items()):
        heights = [values.get("by_genre", {}).get(g, {}).get(key, 0.0) for g in genres]
        axis.bar(np.arange(len(genres)) + (i - (len(retrieval) - 1) / 2) * width, heights, width, label=name)
    axis.set_xticks(range(len(genres)), genres, rotation=30, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel(f"precision@{k}")
    axis.set_title(f"retrieval by genre: share of the {k} nearest posters that carry the query's genre")
    axis.legend(fontsize=8, ncol=min(4, len(retrieval)))
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)


def distance_histograms_png(same: np.ndarray, different: np.ndarray, separation: dict, name: str) -> bytes:
    """Overlaid histograms of cosine distance for pairs that share a genre and pairs that share none."""
    figure, axis = plt.subplots(figsize=(8, 4))
    bins = np.linspace(0, 2, 61)
    # stepfilled: one filled outline per histogram instead of a bar per bin (the same shape, a 60th of the artists)
    axis.hist(different, bins=bins, alpha=0.55, density=True, histtype="stepfilled",
              label=f"no shared genre ({len(different):,} pairs)")
    axis.hist(same, bins=bins, alpha=0.55, density=True, histtype="stepfilled",
              label=f"shared genre ({len(same):,} pairs)")
    axis.set_xlabel("cosine distance (1 − cos)")
    axis.set_ylabel("density")
    auc, d_prime = separation.get("auc"), separation.get("d_prime")
    axis.set_title(f"{name}: pair distances — AUC {auc}, d′ {d_prime}")
    axis.legend()
    return _png(figure)


def grouped_bars_png(rows: dict[str, dict], measures: list[str], title: str) -> bytes:
    """Bars of `measures` (x) for each row of `rows` (one colour each), with their values written on top."""
    figure, axis = plt.subplots(figsize=(max(7, 1.4 * len(measures) + 3), 4))
    width = 0.8 / max(len(rows), 1)
    for i, (name, values) in enumerate(rows.items()):
        heights = [float(values.get(m) or 0.0) for m in measures]
        bars = axis.bar(np.arange(len(measures)) + (i - (len(rows) - 1) / 2) * width, heights, width, label=name)
        axis.bar_label(bars, fmt="%.2f", fontsize=7)
    axis.set_xticks(range(len(measures)), measures, rotation=15)
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)
