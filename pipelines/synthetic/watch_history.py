"""A synthetic watch history for a catalog: users with 1–3 favourite genres who mostly watch titles of those.

Deterministic for a seed. Each user watches up to 30 distinct titles (8 or more unless the catalog is tiny),
`FAVOURITE_SHARE` of them from their favourite genres and the rest from anywhere, at times spread over the
`DAYS` days before `END`, each with a weight (the share of the title watched). Taste drifts: a user's
favourites are ordered, and the genre a favourite watch comes from moves from the first favourite towards the
last over the user's history (`DRIFT_WIDTH`), so the latest watches say the most about the next one — what a
recency-weighted, content-based candidate list can pick up and a random one cannot. Written as CSV with the
contract's columns (`contracts.WATCH_HISTORY_COLUMNS`).
"""
from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import numpy as np

from pipelines.common import storage
from pipelines.config import CatalogConfig
from pipelines.contracts import WATCH_HISTORY_COLUMNS

FAVOURITE_SHARE = 0.85
DRIFT_WIDTH = 0.3  # how far (in shares of the history) a favourite's pull reaches around its turn
DAYS = 90
END = datetime(2024, 6, 30, tzinfo=UTC)


def _titles_by_genre(catalog_rows) -> dict[str, list[str]]:
    by_genre: dict[str, list[str]] = {}
    for row in catalog_rows:
        for genre in row.genres:
            by_genre.setdefault(genre, []).append(row.title_id)
    return by_genre


def _user_watches(rng: np.random.Generator, favourites: list[str], by_genre: dict[str, list[str]],
                  all_titles: list[str]) -> list[str]:
    """8–30 distinct titles in watch order, `FAVOURITE_SHARE` of them of a favourite genre (fewer watches when a
    small catalog has too few such titles to keep that share), the rest from the whole catalog. The i-th
    favourite watch comes from favourite j with weight exp(-((j/(m-1) - i/(n-1)) / DRIFT_WIDTH)² / 2): the
    taste drifts from the first favourite to the last."""
    liked = sorted({t for genre in favourites for t in by_genre[genre]})
    n_watches = max(1, min(int(rng.integers(8, 31)), int(len(liked) / FAVOURITE_SHARE)))
    n_liked = min(len(liked), max(1, round(n_watches * FAVOURITE_SHARE)))
    picked = _drifting_picks(rng, favourites, by_genre, n_liked)
    rest = [t for t in all_titles if t not in set(picked)]
    others = rng.choice(rest, size=min(n_watches - n_liked, len(rest)), replace=False).tolist()
    # The other watches go to random places in the history; the favourite ones keep their drifting order.
    for title in others:
        picked.insert(int(rng.integers(0, len(picked) + 1)), title)
    return picked


def _drifting_picks(rng: np.random.Generator, favourites: list[str], by_genre: dict[str, list[str]],
                    n: int) -> list[str]:
    """`n` distinct titles of the favourite genres in watch order, the genre drifting along the list."""
    pools = {genre: list(rng.permutation(sorted(by_genre[genre]))) for genre in favourites}
    positions = np.linspace(0.0, 1.0, len(favourites)) if len(favourites) > 1 else np.zeros(1)
    picked: list[str] = []
    seen: set[str] = set()
    for i in range(n):
        at = i / max(n - 1, 1)
        weights = np.exp(-0.5 * ((positions - at) / DRIFT_WIDTH) ** 2)
        for j in rng.choice(len(favourites), size=len(favourites), replace=False, p=weights / weights.sum()):
            pool = pools[favourites[j]]
            while pool and pool[-1] in seen:
                pool.pop()
            if pool:
                picked.append(pool.pop())
                seen.add(picked[-1])
                break
    return picked


def _history_rows(rng: np.random.Generator, user_id: str, watched: list[str]) -> list[list]:
    seconds = np.sort(rng.uniform(0, DAYS * 86400, size=len(watched)))
    return [[user_id, title, (END - timedelta(days=DAYS) + timedelta(seconds=float(s))).isoformat(),
             round(float(rng.uniform(0.2, 1.0)), 2)] for title, s in zip(watched, seconds)]


def generate_watch_history(catalog_csv: str, out_csv: str, n_users: int = 200, seed: int = 7,
                           catalog_config: CatalogConfig | None = None) -> dict:
    """Writes a watch history for the titles of `catalog_csv` to `out_csv`; returns counts, each user's
    favourite genres and the order their taste drifts through them (`{"users", "events", "titles_watched",
    "path", "favourite_genres", "taste_drift"}`)."""
    from pipelines.common.catalog import read_catalog

    rows = [row for row in read_catalog(catalog_csv, catalog_config or CatalogConfig()) if row.title_id]
    by_genre = _titles_by_genre(rows)
    if not by_genre:
        raise ValueError(f"catalog {catalog_csv!r} has no titles with genres to watch")
    genres = sorted(by_genre)
    all_titles = sorted({row.title_id for row in rows})
    rng = np.random.default_rng(seed)
    favourites: dict[str, list[str]] = {}
    drift: dict[str, list[str]] = {}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(WATCH_HISTORY_COLUMNS)
    n_events = 0
    watched_titles: set[str] = set()
    for number in range(n_users):
        user_id = f"user-{number:05d}"
        n_favourites = min(int(rng.integers(1, 4)), len(genres))
        in_drift_order = rng.choice(genres, size=n_favourites, replace=False).tolist()
        favourites[user_id], drift[user_id] = sorted(in_drift_order), in_drift_order
        watched = _user_watches(rng, in_drift_order, by_genre, all_titles)
        writer.writerows(_history_rows(rng, user_id, watched))
        n_events += len(watched)
        watched_titles.update(watched)
    storage.write_bytes(out_csv, out.getvalue().encode("utf-8"))
    return {"users": n_users, "events": n_events, "titles_watched": len(watched_titles), "path": out_csv,
            "favourite_genres": favourites, "taste_drift": drift}
