"""The synthetic watch history carries a drifting taste: late watches lean to the last genre of a user's drift."""
from pipelines.common.catalog import read_catalog
from pipelines.config import CatalogConfig
from pipelines.synthetic.catalog import generate_catalog
from pipelines.synthetic.watch_history import generate_watch_history


def test_taste_drifts_from_the_first_favourite_to_the_last(tmp_path):
    generate_catalog(tmp_path / "catalog", n=300, seed=5, width=64, height=96)
    catalog = str(tmp_path / "catalog" / "catalog.csv")
    result = generate_watch_history(catalog, str(tmp_path / "history.csv"), n_users=80, seed=3)
    genres = {row.title_id: set(row.genres) for row in read_catalog(catalog, CatalogConfig())}
    rows = (tmp_path / "history.csv").read_text().splitlines()[1:]
    by_user: dict[str, list[str]] = {}
    for line in rows:  # written in watch order
        user, title = line.split(",")[:2]
        by_user.setdefault(user, []).append(title)
    early = late = 0
    for user, order in result["taste_drift"].items():
        if len(order) < 2 or len(set(order[0:1]) | set(order[-1:])) < 2:
            continue
        titles = by_user[user]
        first_half, second_half = titles[: len(titles) // 2], titles[len(titles) // 2:]
        early += sum(order[-1] in genres[t] for t in first_half) / max(len(first_half), 1)
        late += sum(order[-1] in genres[t] for t in second_half) / max(len(second_half), 1)
    assert late > 1.5 * early
    assert sorted(result["favourite_genres"]) == sorted(result["taste_drift"])
    assert all(sorted(result["taste_drift"][u]) == f for u, f in result["favourite_genres"].items())
