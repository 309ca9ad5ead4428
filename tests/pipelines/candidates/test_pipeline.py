"""`posters candidates` on a small catalog with a Flat (exact) index: item→item and user→item lists equal exact
search, exclude the title itself / what the user watched, and a failed or mismatched run publishes nothing."""
import csv
import glob
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.candidates import pipeline as candidates
from pipelines.contracts import (
    CANDIDATES_SUMMARY_FILE,
    ITEM2ITEM_DIR,
    ITEM2ITEM_SCHEMA,
    SKIPPED_DIR,
    SUCCESS_FILE,
    USER_CANDIDATES_DIR,
    USER_CANDIDATES_SCHEMA,
    SkipReason,
)
from pipelines.embed.reader import EmbeddingsError
from tests.pipelines.candidates.candidate_inputs import build_index, exact_neighbours, unit_vectors, write_embeddings

K = 5
HALF_LIFE_DAYS = 10
TITLES = [f"title-{i:03d}" for i in range(48)]
VECTORS = unit_vectors(len(TITLES), 8, seed=3)
DAY = 86400.0
# user → [(title_id, days before the user's latest watch, weight)]
HISTORY = {
    "ana": [("title-001", 20, 1.0), ("title-002", 10, 2.0), ("title-003", 0, 1.0), ("not-embedded", 0, 5.0)],
    "bo": [("title-010", 0, 1.0)],
    "cy": [("title-020", 3, 0.5), ("title-021", 1, 0.5), ("title-020", 0, 1.0)],  # a rewatch counts twice
    "ghost": [("not-embedded", 0, 1.0), ("also-missing", 1, 1.0)],
}


def _write_history(path: str) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "title_id", "timestamp", "weight"])
        for user, watches in HISTORY.items():
            for title, days_ago, weight in watches:
                writer.writerow([user, title, 1_720_000_000 - days_ago * DAY, weight])
        writer.writerow(["", "title-005", "", ""])  # no user: skipped as malformed
    return path


def _table(out: str, directory: str):
    return pq.read_table(sorted(glob.glob(os.path.join(out, directory, "*.parquet")))).to_pylist()


def _summary(out: str) -> dict:
    with open(os.path.join(out, CANDIDATES_SUMMARY_FILE)) as handle:
        return json.load(handle)


def _expected_user_query(user: str) -> np.ndarray:
    """Σ weight · 0.5^(days_ago / half-life) · embedding over the embedded watches, normalised."""
    row = {t: i for i, t in enumerate(TITLES)}
    total = sum(w * 0.5 ** (days / HALF_LIFE_DAYS) * VECTORS[row[t]] for t, days, w in HISTORY[user] if t in row)
    return total / np.linalg.norm(total)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("candidates")
    embeddings = write_embeddings(str(root / "embeddings"), TITLES, VECTORS)
    manifest = build_index(embeddings, str(root / "index"))
    history = _write_history(str(root / "history.csv"))
    out = str(root / "candidates")
    code = candidates.main(["--config", "configs/local.yaml", "--set", f"candidates.k={K}",
                            "--set", f"candidates.recency_half_life_days={HALF_LIFE_DAYS}",
                            "--set", "candidates.query_batch_size=7",
                            "--index", str(root / "index"), "--embeddings", embeddings, "--history", history,
                            "--out", out])
    assert code == 0
    return {"root": root, "out": out, "manifest": manifest, "embeddings": embeddings, "history": history}


def test_item2item_excludes_the_title_itself_and_equals_exact_search(published):
    rows = {row["title_id"]: row for row in _table(published["out"], ITEM2ITEM_DIR)}
    assert sorted(rows) == TITLES
    for i, title in enumerate(TITLES):
        expected = exact_neighbours(VECTORS[i], TITLES, VECTORS, {title}, K)
        found = [(n["title_id"], n["score"]) for n in rows[title]["neighbors"]]
        assert [t for t, _ in found] == [t for t, _ in expected]
        np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)


def test_user_candidates_exclude_watched_titles_and_equal_the_exact_average_embedding_neighbours(published):
    rows = {row["user_id"]: row for row in _table(published["out"], USER_CANDIDATES_DIR)}
    assert sorted(rows) == ["ana", "bo", "cy"]
    for user, row in rows.items():
        watched = {t for t, _, _ in HISTORY[user]}
        expected = exact_neighbours(_expected_user_query(user), TITLES, VECTORS, watched, K)
        found = [(c["title_id"], c["score"]) for c in row["candidates"]]
        assert not watched & {t for t, _ in found}
        assert [t for t, _ in found] == [t for t, _ in expected]
        np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)


def test_users_and_rows_that_give_no_query_are_written_with_their_reason_and_counted(published):
    skipped = {(row["user_id"], row["title_id"], row["reason"]) for row in _table(published["out"], SKIPPED_DIR)}
    assert skipped == {("ghost", "", SkipReason.NO_EMBEDDED_TITLE), ("", "title-005", SkipReason.MALFORMED_WATCH)}
    summary = _summary(published["out"])
    assert summary["skipped"] == {SkipReason.NO_EMBEDDED_TITLE: 1, SkipReason.MALFORMED_WATCH: 1}
    assert (summary["titles"], summary["users"], summary["watches"]) == (48, 3, 10)
    assert summary["watches_of_titles_without_embedding"] == 3


def test_outputs_carry_the_contract_schema_and_the_index_and_model_versions(published):
    out, manifest = published["out"], published["manifest"]
    assert os.path.exists(os.path.join(out, SUCCESS_FILE))
    for directory, schema in ((ITEM2ITEM_DIR, ITEM2ITEM_SCHEMA), (USER_CANDIDATES_DIR, USER_CANDIDATES_SCHEMA)):
        table = pq.read_table(sorted(glob.glob(os.path.join(out, directory, "*.parquet"))))
        assert table.schema.remove_metadata().equals(schema)
        assert set(table.column("index_version").to_pylist()) == {manifest["version"]}
        assert set(table.column("model_version").to_pylist()) == {"model-a"}
    assert not [name for name in os.listdir(published["root"]) if name.startswith(".staging")]


def test_embeddings_of_another_model_than_the_index_are_refused_and_nothing_is_published(published, tmp_path,
                                                                                          capsys):
    other = write_embeddings(str(tmp_path / "other"), TITLES, VECTORS, model_version="model-b")
    code = candidates.main(["--config", "configs/local.yaml", "--index", str(published["root"] / "index"),
                            "--embeddings", other, "--history", published["history"], "--out", str(tmp_path / "out")])
    assert code == 1
    assert "model model-a's embeddings" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_a_failed_run_publishes_nothing_and_leaves_the_previous_output_in_place(published, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(published["out"], out)  # the previous run's published output
    argv = ["--config", "configs/local.yaml", "--index", str(published["root"] / "index"),
            "--embeddings", published["embeddings"], "--out", out]
    before = _table(out, ITEM2ITEM_DIR)
    assert len(before) == len(TITLES)
    unreadable = tmp_path / "history.parquet"
    unreadable.write_bytes(b"this is not parquet")
    assert candidates.main(argv + ["--history", str(unreadable)]) != 0
    assert _table(out, ITEM2ITEM_DIR) == before
    assert sorted(os.listdir(tmp_path)) == ["history.parquet", "out"]


def test_an_out_that_is_the_index_root_is_refused_before_any_work_and_the_index_is_kept(published, tmp_path,
                                                                                          capsys):
    """`candidates --out <index root>` used to exit 0 after deleting every index version and CURRENT."""
    index_root = tmp_path / "index"
    shutil.copytree(published["root"] / "index", index_root)
    before = sorted(p.relative_to(index_root) for p in index_root.rglob("*"))
    argv = ["--config", "configs/local.yaml", "--index", str(index_root), "--embeddings", published["embeddings"],
            "--history", published["history"]]
    assert candidates.main(argv + ["--out", str(index_root)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"posters candidates: --out {index_root} is the input --index {index_root}: publishing there "
                   "would delete or replace that input; choose an output outside every input")
    assert sorted(p.relative_to(index_root) for p in index_root.rglob("*")) == before
    assert candidates.main(argv + ["--out", str(tmp_path)]) == 1  # the directory holding the index
    assert "contains the input --index" in capsys.readouterr().err
    assert sorted(p.relative_to(index_root) for p in index_root.rglob("*")) == before


def test_an_out_that_is_an_existing_file_is_refused_and_the_file_kept(published, tmp_path, capsys):
    """It used to be renamed to `*.old-xxxx` and a directory put in its place, exit 0."""
    out = tmp_path / "candidates.parquet"
    out.write_bytes(b"somebody's file")
    assert candidates.main(["--config", "configs/local.yaml", "--index", str(published["root"] / "index"),
                            "--embeddings", published["embeddings"], "--history", published["history"],
                            "--out", str(out)]) == 1
    assert "is an existing file" in capsys.readouterr().err
    assert out.read_bytes() == b"somebody's file" and sorted(os.listdir(tmp_path)) == ["candidates.parquet"]


def test_truncated_embeddings_are_a_one_line_error_naming_the_file(published, tmp_path, capsys):
    embeddings = tmp_path / "embeddings"
    shutil.copytree(published["embeddings"], embeddings)
    part = embeddings / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(EmbeddingsError, match=f"^{part} is not a readable Parquet file"):
        list(candidates.embedding_vectors(str(part), 8))
    assert candidates.main(["--config", "configs/local.yaml", "--index", str(published["root"] / "index"),
                            "--embeddings", str(embeddings), "--history", published["history"],
                            "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"posters candidates: {part} is not a readable Parquet file") and "\n" not in err
    assert "rerun `posters embed`" in err and not os.path.exists(tmp_path / "out")


def test_item2item_and_user_searches_share_one_memory_mapped_index(published, tmp_path, monkeypatch):
    """The DirectRunner runs every step in this process: one worker, so one load of the index — memory-mapped
    from the one verified local copy (it used to be read whole into every process's memory)."""
    from pipelines.index import loader as index_loader

    loads, opened = [], []

    def counting_load_index(uri, **kwargs):
        loads.append((uri, kwargs))
        opened.append(real_load_index(uri, **kwargs))
        return opened[-1]

    real_load_index = index_loader.load_index
    monkeypatch.setattr(index_loader, "load_index", counting_load_index)
    assert candidates.main(["--config", "configs/local.yaml", "--index", str(published["root"] / "index"),
                            "--embeddings", published["embeddings"], "--history", published["history"],
                            "--out", str(tmp_path / "out")]) == 0
    assert len(loads) == 1
    assert loads[0][1]["mmap"] is True and opened[0].mode == "mmap"
    assert _summary(str(tmp_path / "out"))["users"] == 3


class RecordingIndex:
    """Stands in for a loaded index: records each search's (queries, depth) and ranks titles by a fixed order."""

    def __init__(self, titles):
        self.titles, self.searches = titles, []

    def search(self, vectors, depth):
        self.searches.append((len(vectors), depth))
        ranked = self.titles[:depth]
        return [ranked] * len(vectors), np.tile(np.linspace(1, 0, len(ranked), dtype=np.float32), (len(vectors), 1))


def test_one_heavy_user_does_not_deepen_the_other_queries_of_its_batch():
    """The batch used to be searched once at k + the largest exclusion: 9 light users searched 3,000 deep."""
    titles = [f"title-{i:05d}" for i in range(5000)]
    light = [candidates.Query(f"u{i}", VECTORS[i], frozenset(titles[i:i + 2])) for i in range(9)]
    heavy = candidates.Query("binge", VECTORS[9], frozenset(titles[:3000]))
    index = RecordingIndex(titles)
    found = dict((query.key, neighbours) for query, neighbours in
                 candidates.search_by_depth(index, light[:4] + [heavy] + light[4:], K))
    assert sorted(index.searches) == [(1, K + 4096), (9, K + 2)]
    assert sum(n * depth for n, depth in index.searches) == 9 * (K + 2) + K + 4096  # not 10 * (K + 3000)
    assert [n["title_id"] for n in found["binge"]] == titles[3000:3000 + K]
    assert [n["title_id"] for n in found["u0"]] == titles[2:2 + K]


def test_every_query_is_searched_at_least_as_deep_as_its_exclusions_need():
    assert [candidates.search_depth(K, n) for n in (0, 1, 2, 3, 4, 5, 1000)] == [K, K + 1, K + 2, K + 4, K + 4,
                                                                                 K + 8, K + 1024]


def test_top_k_skips_excluded_titles_and_short_results():
    found = candidates.top_k_excluding(["a", "b", "c", "d"], [0.9, 0.8, 0.7, 0.6], frozenset({"b"}), 2)
    assert found == [{"title_id": "a", "score": pytest.approx(0.9)}, {"title_id": "c", "score": pytest.approx(0.7)}]
    assert candidates.top_k_excluding(["a"], [0.9], frozenset({"a"}), 3) == []


def test_watches_with_bad_weights_or_timestamps_are_skipped_and_no_user_gets_non_finite_candidates(published,
                                                                                                   tmp_path):
    """Weights of 1e308 used to give a NaN query that still got K published candidates; a watch dated 2099 (or in
    milliseconds) became every user's "latest" one and decided the query alone. Now each such row is skipped with
    its reason, and every published user's list is the exact neighbours of their usable watches."""
    now = 1_720_000_000
    rows = [("huge", "title-001", now, 1e308), ("huge", "title-002", now, 1e308),
            ("nan", "title-003", now, "nan"),
            ("future", "title-010", now - DAY, 1.0), ("future", "title-011", "2099-01-01T00:00:00Z", 0.01),
            ("millis", "title-020", now * 1000, 1.0), ("millis", "title-021", now - DAY, 1.0)]
    history = tmp_path / "history.csv"
    with open(history, "w", newline="") as handle:
        csv.writer(handle).writerows([("user_id", "title_id", "timestamp", "weight"), *rows])
    out = str(tmp_path / "out")
    assert candidates.main(["--config", "configs/local.yaml", "--set", f"candidates.k={K}",
                            "--set", f"candidates.recency_half_life_days={HALF_LIFE_DAYS}",
                            "--index", str(published["root"] / "index"), "--embeddings", published["embeddings"],
                            "--history", str(history), "--out", out]) == 0
    skipped = {(row["user_id"], row["title_id"], row["reason"]) for row in _table(out, SKIPPED_DIR)}
    assert skipped == {("huge", "title-001", SkipReason.BAD_WEIGHT), ("huge", "title-002", SkipReason.BAD_WEIGHT),
                       ("nan", "title-003", SkipReason.BAD_WEIGHT),
                       ("future", "title-011", SkipReason.FUTURE_TIMESTAMP),
                       ("millis", "title-020", SkipReason.TIMESTAMP_NOT_SECONDS)}
    users = {row["user_id"]: row["candidates"] for row in _table(out, USER_CANDIDATES_DIR)}
    assert sorted(users) == ["future", "millis"]
    for user, watched in (("future", "title-010"), ("millis", "title-021")):
        i = TITLES.index(watched)
        expected = exact_neighbours(VECTORS[i], TITLES, VECTORS, {watched}, K)
        assert [c["title_id"] for c in users[user]] == [t for t, _ in expected]
        np.testing.assert_allclose([c["score"] for c in users[user]], [s for _, s in expected], atol=1e-5)
    assert _summary(out)["skipped"] == {SkipReason.BAD_WEIGHT: 3, SkipReason.FUTURE_TIMESTAMP: 1,
                                        SkipReason.TIMESTAMP_NOT_SECONDS: 1}


def test_item2item_and_user_folders_open_with_pyarrow_dataset_and_duckdb(published):
    """Standard readers open the folders as they are: the side files (`_SUCCESS`, `_skipped/`, the summary)
    start with "_" and sit beside `item2item/` and `user/`, never among their files."""
    import duckdb
    import pyarrow.dataset as ds

    out = published["out"]
    assert sorted(os.listdir(out)) == sorted([ITEM2ITEM_DIR, USER_CANDIDATES_DIR, SKIPPED_DIR,
                                              CANDIDATES_SUMMARY_FILE, SUCCESS_FILE])
    for directory, key, expected in ((ITEM2ITEM_DIR, "title_id", TITLES),
                                     (USER_CANDIDATES_DIR, "user_id", ["ana", "bo", "cy"])):
        folder = os.path.join(out, directory)
        assert sorted(ds.dataset(folder, format="parquet").to_table().column(key).to_pylist()) == expected
        assert sorted(pq.read_table(folder).column(key).to_pylist()) == expected
        found = duckdb.sql(f"SELECT {key} FROM read_parquet('{folder}/*.parquet') ORDER BY {key}").fetchall()
        assert [row[0] for row in found] == expected
