"""Watch history: every format reads the same, bad rows come out as skips with a reason, and a user's query is
the normalised weighted average of what they watched, with recency decay."""
import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.candidates.watch_history import (
    ReadWatchHistory,
    Skip,
    UserQueries,
    UserQuery,
    WatchEvent,
    WatchLimits,
    history_format,
    parse_timestamp,
    read_watch_history,
    user_query,
    watch_weights,
    weighted_query,
)
from pipelines.contracts import SkipReason

ROWS = [
    {"user_id": "u1", "title_id": "t1", "timestamp": "2024-01-01T00:00:00+00:00", "weight": 1.0},
    {"user_id": "u1", "title_id": "t2", "timestamp": "2024-01-11T00:00:00+00:00", "weight": 0.5},
    {"user_id": "u2", "title_id": "t3", "timestamp": None, "weight": None},
]
NOW = datetime(2024, 7, 1, tzinfo=UTC).timestamp()
LIMITS = WatchLimits(now=NOW, max_weight=1000.0, max_clock_skew_s=300.0)


# The whole-history query builder for the tests (the pipeline builds queries in Beam).
def user_queries(events: Iterable[WatchEvent], embeddings: dict[str, np.ndarray],
                 half_life_days: Optional[float]) -> list[UserQuery | Skip]:
    """`user_query` for every user in `events`, outside Beam (sorted by user_id)."""
    by_user: dict[str, list] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append((event, embeddings.get(event.title_id)))
    return [user_query(user, watches, half_life_days) for user, watches in sorted(by_user.items())]



EXPECTED = [
    WatchEvent("u1", "t1", datetime(2024, 1, 1, tzinfo=UTC).timestamp(), 1.0),
    WatchEvent("u1", "t2", datetime(2024, 1, 11, tzinfo=UTC).timestamp(), 0.5),
    WatchEvent("u2", "t3", None, 1.0),
]


def _write(path, rows, fmt):
    if fmt == "csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["user_id", "title_id", "timestamp", "weight"])
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    elif fmt == "jsonl":
        with open(path, "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_every_format_reads_the_same_events(tmp_path, fmt):
    path = _write(tmp_path / f"history.{fmt}", ROWS, fmt)
    assert read_watch_history(path) == EXPECTED


def test_parquet_timestamps_may_be_a_timestamp_column(tmp_path):
    when = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    table = pa.table({"user_id": ["u"], "title_id": ["t"], "timestamp": pa.array([when], pa.timestamp("s", "UTC"))})
    pq.write_table(table, tmp_path / "h.parquet")
    assert read_watch_history(str(tmp_path / "h.parquet")) == [WatchEvent("u", "t", when.timestamp(), 1.0)]


def test_timestamps_parse_from_epoch_seconds_iso_strings_and_naive_datetimes_as_utc():
    assert parse_timestamp(1_700_000_000) == 1_700_000_000.0
    assert parse_timestamp("1700000000") == 1_700_000_000.0
    assert parse_timestamp("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert parse_timestamp(datetime(2023, 11, 14, 22, 13, 20)) == 1_700_000_000.0
    assert parse_timestamp("") is None


def test_unusable_rows_come_out_as_skips_with_a_reason(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join([
        json.dumps({"user_id": "u1", "title_id": "t1"}),
        json.dumps({"user_id": "", "title_id": "t1"}),
        json.dumps({"user_id": "u1", "title_id": "t1", "weight": "lots"}),
        json.dumps({"user_id": "u1", "title_id": "t1", "weight": -1}),
        json.dumps({"user_id": "u1", "title_id": "t1", "timestamp": "yesterday-ish"}),
        "{not json",
        "[1, 2]",
    ]) + "\n")
    events = read_watch_history(str(path))
    assert events[0] == WatchEvent("u1", "t1", None, 1.0)
    assert [e.reason for e in events[1:]] == [SkipReason.MALFORMED_WATCH, SkipReason.MALFORMED_WATCH,
                                              SkipReason.BAD_WEIGHT, SkipReason.MALFORMED_WATCH,
                                              SkipReason.MALFORMED_WATCH, SkipReason.MALFORMED_WATCH]
    assert len(events) == 7


def test_a_file_without_a_user_id_column_is_an_error_naming_its_columns(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("customer,title_id\nc1,t1\n")
    with pytest.raises(ValueError, match="no column user_id.*customer, title_id"):
        read_watch_history(str(path))


def test_the_format_comes_from_the_file_name():
    assert history_format("gs://b/history/part-*.parquet") == "parquet"
    assert history_format("/data/history.csv.gz") == "csv"
    assert history_format("h.ndjson") == "jsonl"
    with pytest.raises(ValueError, match=r"\*.csv, \*.jsonl or \*.parquet"):
        history_format("history.xlsx")


def test_the_query_is_the_normalised_weighted_average():
    """(1·[1,0] + 3·[0,1]) / |…| = [1,3]/√10."""
    query = weighted_query(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 3.0]))
    np.testing.assert_allclose(query, np.array([1.0, 3.0]) / np.sqrt(10), rtol=1e-6)
    assert query.dtype == np.float32


def test_recency_halves_a_watch_weight_every_half_life_before_the_latest_watch():
    """Ages 0, 10 and 20 days with a 10-day half-life: factors 1, 1/2, 1/4; an undated watch is not decayed."""
    day = 86400.0
    weights = watch_weights(np.array([2.0, 2.0, 2.0, 2.0]), [20 * day, 10 * day, 0.0, None], half_life_days=10)
    np.testing.assert_allclose(weights, [2.0, 1.0, 0.5, 2.0])
    np.testing.assert_allclose(watch_weights(np.array([2.0]), [0.0], None), [2.0])


def test_a_user_query_uses_only_embedded_titles_but_excludes_everything_watched():
    vectors = {"a": np.array([1.0, 0.0], np.float32)}
    query = user_query("u", [(WatchEvent("u", "a", None, 1.0), vectors["a"]),
                             (WatchEvent("u", "gone", None, 1.0), None)], None)
    assert isinstance(query, UserQuery)
    np.testing.assert_allclose(query.vector, [1.0, 0.0])
    assert query.watched == {"a", "gone"}


def test_users_without_an_embedded_title_or_with_zero_weight_are_skipped_with_the_reason():
    vectors = {"a": np.array([1.0, 0.0], np.float32)}
    results = user_queries([WatchEvent("u1", "gone", None, 1.0), WatchEvent("u2", "a", None, 0.0)], vectors, None)
    assert [(r.user_id, r.reason) for r in results] == [("u1", SkipReason.NO_EMBEDDED_TITLE),
                                                         ("u2", SkipReason.ZERO_WEIGHT)]


def test_the_beam_transforms_give_what_the_plain_functions_give(tmp_path):
    path = _write(tmp_path / "history.csv", ROWS + [{"user_id": "", "title_id": "t9", "timestamp": None,
                                                     "weight": None}], "csv")
    embeddings = {"t1": np.array([1.0, 0.0], np.float32), "t2": np.array([0.0, 1.0], np.float32)}
    as_tuple = lambda r: (r.user_id, tuple(round(float(x), 5) for x in r.vector),  # noqa: E731
                          tuple(sorted(r.watched)))
    # Worked by hand for u1: t1 (weight 1.0) is 10 days older than t2 (weight 0.5), so with a 10-day half-life
    # both count 0.5; 0.5·[1,0] + 0.5·[0,1] normalised is [1/√2, 1/√2]. u2 watched only t3, which has no
    # embedding, so u2 is skipped.
    hand_worked = [("u1", (0.70711, 0.70711), ("t1", "t2"))]
    plain = user_queries(EXPECTED, embeddings, half_life_days=10)
    assert [as_tuple(r) for r in plain if isinstance(r, UserQuery)] == hand_worked
    assert [(r.user_id, r.reason) for r in plain if isinstance(r, Skip)] == [("u2", SkipReason.NO_EMBEDDED_TITLE)]
    with BeamTestPipeline() as pipeline:
        history = pipeline | ReadWatchHistory(path, LIMITS)
        vectors = pipeline | "Embeddings" >> beam.Create(sorted(embeddings.items()))
        users = (history.events, vectors) | UserQueries(half_life_days=10)
        assert_that(history.skipped | "SkipReasons" >> beam.Map(lambda s: (s.title_id, s.reason)),
                    equal_to([("t9", SkipReason.MALFORMED_WATCH)]), label="MalformedRows")
        assert_that(users.queries | "QueryTuples" >> beam.Map(as_tuple),
                    equal_to(hand_worked), label="Queries")
        assert_that(users.skipped | "SkippedUsers" >> beam.Map(lambda s: (s.user_id, s.reason)),
                    equal_to([("u2", SkipReason.NO_EMBEDDED_TITLE)]), label="SkippedUsers")


def test_the_synthetic_history_is_deterministic_and_users_mostly_watch_their_favourite_genres(tmp_path):
    from pipelines.common.catalog import read_catalog
    from pipelines.config import CatalogConfig
    from pipelines.synthetic.catalog import generate_catalog
    from pipelines.synthetic.watch_history import DAYS, END, generate_watch_history

    generate_catalog(tmp_path / "catalog", n=40, seed=4, width=64, height=96)
    catalog = str(tmp_path / "catalog" / "catalog.csv")
    first = generate_watch_history(catalog, str(tmp_path / "a.csv"), n_users=30, seed=9)
    generate_watch_history(catalog, str(tmp_path / "b.csv"), n_users=30, seed=9)
    generate_watch_history(catalog, str(tmp_path / "c.csv"), n_users=30, seed=10)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()

    events = read_watch_history(str(tmp_path / "a.csv"))
    assert all(isinstance(e, WatchEvent) for e in events) and len(events) == first["events"]
    assert all(0.2 <= e.weight <= 1.0 and END.timestamp() - DAYS * 86400 <= e.timestamp <= END.timestamp()
               for e in events)
    genres = {row.title_id: set(row.genres) for row in read_catalog(catalog, CatalogConfig())}
    favourites = first["favourite_genres"]
    assert len(favourites) == 30 and all(1 <= len(f) <= 3 for f in favourites.values())
    liked = [bool(genres[e.title_id] & set(favourites[e.user_id])) for e in events]
    assert sum(liked) / len(liked) > 0.8
    watched = {}
    for e in events:
        watched.setdefault(e.user_id, []).append(e.title_id)
    assert all(1 <= len(titles) <= 30 and len(set(titles)) == len(titles) for titles in watched.values())


def _reasons(tmp_path, rows, limits=LIMITS):
    """(title_id, reason or "ok") of every row, read back through a JSONL file."""
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps({"user_id": "u", **row}) + "\n" for row in rows))
    return [(e.title_id, e.reason if isinstance(e, Skip) else "ok") for e in read_watch_history(str(path), limits)]


def test_weights_must_be_finite_and_within_the_configured_bound(tmp_path):
    rows = [{"title_id": "huge", "weight": 1e308}, {"title_id": "inf", "weight": "inf"},
            {"title_id": "nan", "weight": "nan"}, {"title_id": "negative", "weight": -0.5},
            {"title_id": "above", "weight": 1000.5}, {"title_id": "at-bound", "weight": 1000},
            {"title_id": "zero", "weight": 0}, {"title_id": "a-list", "weight": [1]}]
    assert _reasons(tmp_path, rows) == [("huge", SkipReason.BAD_WEIGHT), ("inf", SkipReason.BAD_WEIGHT),
                                        ("nan", SkipReason.BAD_WEIGHT), ("negative", SkipReason.BAD_WEIGHT),
                                        ("above", SkipReason.BAD_WEIGHT), ("at-bound", "ok"), ("zero", "ok"),
                                        ("a-list", SkipReason.MALFORMED_WATCH)]
    tighter = LIMITS._replace(max_weight=5.0)
    assert _reasons(tmp_path, [{"title_id": "six", "weight": 6}], tighter) == [("six", SkipReason.BAD_WEIGHT)]


def test_a_watch_dated_after_the_run_started_beyond_the_clock_skew_is_skipped(tmp_path):
    rows = [{"title_id": "2099", "timestamp": "2099-01-01T00:00:00Z"},
            {"title_id": "skew-ok", "timestamp": NOW + 299}, {"title_id": "too-late", "timestamp": NOW + 301},
            {"title_id": "past", "timestamp": NOW - 86400}]
    assert _reasons(tmp_path, rows) == [("2099", SkipReason.FUTURE_TIMESTAMP), ("skew-ok", "ok"),
                                        ("too-late", SkipReason.FUTURE_TIMESTAMP), ("past", "ok")]
    skip = read_watch_history(str(tmp_path / "h.jsonl"), LIMITS)[0]
    assert "2099-01-01T00:00:00+00:00 is after the run started (2024-07-01T00:00:00+00:00)" in skip.detail


def test_a_millisecond_timestamp_is_skipped_as_not_seconds(tmp_path):
    rows = [{"title_id": "ms", "timestamp": NOW * 1000}, {"title_id": "ms-text", "timestamp": str(int(NOW * 1000))},
            {"title_id": "seconds", "timestamp": NOW}, {"title_id": "nan", "timestamp": "nan"}]
    assert _reasons(tmp_path, rows) == [("ms", SkipReason.TIMESTAMP_NOT_SECONDS),
                                        ("ms-text", SkipReason.TIMESTAMP_NOT_SECONDS), ("seconds", "ok"),
                                        ("nan", SkipReason.MALFORMED_WATCH)]


def test_one_future_watch_no_longer_decides_a_users_query(tmp_path):
    """A 2099 watch of weight 0.01 used to be the "latest" one: with a 10-day half-life every real watch decayed to
    nothing and the 0.01 watch alone made the query. Skipped, it leaves the user's real watch as the query."""
    rows = [{"title_id": "real", "timestamp": NOW - 86400, "weight": 1.0},
            {"title_id": "future", "timestamp": "2099-01-01T00:00:00Z", "weight": 0.01}]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps({"user_id": "u", **row}) + "\n" for row in rows))
    events = read_watch_history(str(path), LIMITS)
    assert [(e.title_id, e.reason) for e in events if isinstance(e, Skip)] == [("future", SkipReason.FUTURE_TIMESTAMP)]
    embeddings = {"real": np.array([1.0, 0.0], np.float32), "future": np.array([0.0, 1.0], np.float32)}
    [query] = user_queries([e for e in events if isinstance(e, WatchEvent)], embeddings, half_life_days=10)
    np.testing.assert_allclose(query.vector, [1.0, 0.0])


def test_huge_weights_do_not_overflow_the_weighted_average():
    """1e308 + 1e308 is inf in float64: the weights are scaled before summing, so the average stays finite."""
    query = weighted_query(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1e308, 1e308]))
    np.testing.assert_allclose(query, [2 ** -0.5, 2 ** -0.5], rtol=1e-6)
    tiny = weighted_query(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1e-300, 3e-300]))
    np.testing.assert_allclose(tiny, np.array([1.0, 3.0]) / np.sqrt(10), rtol=1e-6)


def test_a_user_whose_query_is_not_finite_or_zero_is_skipped_never_searched():
    vectors = {"nan": np.array([np.nan, 0.0], np.float32), "ok": np.array([1.0, 0.0], np.float32),
               "opposite": np.array([-1.0, 0.0], np.float32), "inf": np.array([np.inf, 0.0], np.float32)}
    results = user_queries([WatchEvent("a", "nan", None, 1.0), WatchEvent("a", "ok", None, 1.0),
                            WatchEvent("b", "ok", None, 1.0), WatchEvent("b", "opposite", None, 1.0),
                            WatchEvent("c", "inf", None, 1.0), WatchEvent("d", "ok", None, float("inf"))],
                           vectors, None)
    assert [(r.user_id, r.reason) for r in results] == [("a", SkipReason.NON_FINITE_QUERY),
                                                         ("b", SkipReason.ZERO_WEIGHT),
                                                         ("c", SkipReason.NON_FINITE_QUERY),
                                                         ("d", SkipReason.NON_FINITE_QUERY)]
    assert "nan" in results[0].detail
