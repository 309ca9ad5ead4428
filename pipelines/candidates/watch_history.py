"""Watch history: reading it by URI (CSV, JSONL or Parquet) and turning each user's watches into one query.

A row is `user_id`, `title_id` and optionally `timestamp` (seconds since the epoch or ISO 8601) and `weight`
(default 1). A user's query is the L2-normalised weighted average of the embeddings of the titles they
watched; with a recency half-life, a watch's weight also halves every `half_life_days` before the user's
latest watch. (The reference time cancels out in the normalisation, so the user's own latest watch is as good
as "now" and keeps reruns deterministic.) Undated watches get no decay.

Rows that cannot be used are never dropped silently: they come out as `Skip` records with a reason. A usable
row's weight is finite, from 0 to `candidates.max_watch_weight`; its timestamp is no later than the run's start
plus `candidates.max_clock_skew_s` (one watch dated in the future would otherwise be the "latest" one and decay
every other watch to nothing) and reads as seconds (a number past the year 3000 is taken for milliseconds). A
user whose query comes out zero or not finite is skipped too, never searched.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics

from pipelines.config import CandidatesConfig
from pipelines.contracts import WATCH_HISTORY_COLUMNS, SkipReason

_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".deflate")
SKIPPED_TAG = "skipped"
METRICS_NAMESPACE = "watch_history"
# Seconds since the epoch of 1 January 3000: a larger number is not a timestamp in seconds (2024 in milliseconds
# is 1.7e12, past the year 50000 in seconds).
LATEST_PLAUSIBLE_SECONDS = datetime(3000, 1, 1, tzinfo=UTC).timestamp()


class WatchEvent(NamedTuple):
    user_id: str
    title_id: str
    timestamp: Optional[float]  # seconds since the epoch, UTC; None when the row has none
    weight: float


class Skip(NamedTuple):
    """A watch row or a user that produced no query, and why (`contracts.SkipReason`)."""

    user_id: str
    title_id: str
    reason: str
    detail: str


class WatchLimits(NamedTuple):
    """What a usable row is: weight in [0, max_weight], timestamp at most `now + max_clock_skew_s`."""

    now: float  # seconds since the epoch: the run's start, fixed once so every worker judges alike
    max_weight: float
    max_clock_skew_s: float


def watch_limits(config: CandidatesConfig, now: Optional[float] = None) -> WatchLimits:
    """The config's limits, judged at `now` (None: this moment)."""
    return WatchLimits(time.time() if now is None else now, config.max_watch_weight, config.max_clock_skew_s)


@dataclass(frozen=True)
class UserQuery:
    user_id: str
    vector: np.ndarray  # float32 [d], unit length
    watched: frozenset  # title_ids the user watched (embedded or not): never recommended back


def history_format(uri: str) -> str:
    """`csv`, `jsonl` or `parquet` from the file name (a `.gz`/`.bz2` suffix is looked through)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1].lower()
    for suffix in _COMPRESSIONS:
        name = name.removesuffix(suffix)
    for suffix, fmt in _FORMATS.items():
        if name.endswith(suffix) or name.endswith(suffix + "*"):
            return fmt
    raise ValueError(f"watch history {uri!r}: name it *.csv, *.jsonl or *.parquet (optionally .gz) "
                     "so its format is known")


def parse_timestamp(value: Any) -> Optional[float]:
    """Seconds since the epoch from a number, an ISO 8601 string or a datetime (naive means UTC)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return parse_timestamp(datetime.fromisoformat(value.strip()))
    raise ValueError(f"not a timestamp: {value!r}")


def watch_event(row: dict, limits: WatchLimits) -> WatchEvent | Skip:
    """One history row → a `WatchEvent`, or a `Skip` that says what is wrong with it."""
    user_id, title_id = (str(row.get(c) or "").strip() for c in ("user_id", "title_id"))
    if not user_id or not title_id:
        return Skip(user_id, title_id, SkipReason.MALFORMED_WATCH, f"missing user_id or title_id: {row}")
    raw_weight = row.get("weight")
    try:
        timestamp = parse_timestamp(row.get("timestamp"))
        weight = 1.0 if raw_weight is None or raw_weight == "" else float(raw_weight)
    except (ValueError, TypeError, OverflowError) as err:
        return Skip(user_id, title_id, SkipReason.MALFORMED_WATCH, str(err))
    problem = weight_problem(weight, limits) or timestamp_problem(timestamp, limits)
    if problem:
        return Skip(user_id, title_id, *problem)
    return WatchEvent(user_id, title_id, timestamp, weight)


def weight_problem(weight: float, limits: WatchLimits) -> Optional[tuple[str, str]]:
    """(reason, detail) when a watch's weight is not a finite number from 0 to `limits.max_weight`."""
    if math.isfinite(weight) and 0 <= weight <= limits.max_weight:
        return None
    return SkipReason.BAD_WEIGHT, (f"weight must be a finite number from 0 to candidates.max_watch_weight "
                                   f"({limits.max_weight:g}), got {weight!r}")


def timestamp_problem(timestamp: Optional[float], limits: WatchLimits) -> Optional[tuple[str, str]]:
    """(reason, detail) when a timestamp is not finite, not in seconds, or later than the run allows."""
    if timestamp is None:
        return None
    if not math.isfinite(timestamp):
        return SkipReason.MALFORMED_WATCH, f"not a timestamp: {timestamp!r}"
    if timestamp > LATEST_PLAUSIBLE_SECONDS:
        return SkipReason.TIMESTAMP_NOT_SECONDS, (f"timestamp {timestamp:.0f} is past the year 3000 in seconds since "
                                                  "the epoch (milliseconds?): give seconds or ISO 8601")
    latest = limits.now + limits.max_clock_skew_s
    if timestamp > latest:
        return SkipReason.FUTURE_TIMESTAMP, (f"timestamp {_iso(timestamp)} is after the run started "
                                             f"({_iso(limits.now)}) by more than candidates.max_clock_skew_s "
                                             f"({limits.max_clock_skew_s:g} s)")
    return None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _rows(handle: IO[bytes], fmt: str, source: str) -> Iterator[dict | Skip]:
    if fmt == "parquet":
        parquet = pq.ParquetFile(handle)
        _require_columns(parquet.schema_arrow.names, source)
        columns = [c for c in WATCH_HISTORY_COLUMNS if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(columns=columns):
            yield from batch.to_pylist()
    elif fmt == "csv":
        reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8-sig", errors="replace", newline=""))
        _require_columns(reader.fieldnames or [], source)
        yield from reader
    else:
        for number, line in enumerate(io.TextIOWrapper(handle, encoding="utf-8", errors="replace"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                row = Skip("", "", SkipReason.MALFORMED_WATCH, f"{source}:{number}: not JSON: {err}")
            yield row if isinstance(row, (dict, Skip)) else Skip(
                "", "", SkipReason.MALFORMED_WATCH, f"{source}:{number}: not an object: {line.strip()[:200]}")


def _require_columns(names: Iterable[str], source: str) -> None:
    missing = [c for c in ("user_id", "title_id") if c not in set(names)]
    if missing:
        raise ValueError(f"watch history {source}: no column {', '.join(missing)} (columns: {', '.join(names)})")


def read_watch_events(handle: IO[bytes], fmt: str, limits: WatchLimits,
                      source: str = "") -> Iterator[WatchEvent | Skip]:
    """Every row of one history file, as `WatchEvent`s and `Skip`s; a file that cannot be parsed raises."""
    for row in _rows(handle, fmt, source):
        yield row if isinstance(row, Skip) else watch_event(row, limits)


def read_watch_history(uri: str, limits: Optional[WatchLimits] = None) -> list[WatchEvent | Skip]:
    """Every row of the history at `uri` (a file or a glob), outside Beam (None: the default limits, now);
    for bounded histories (the evaluator's held-out split), not for the pipeline."""
    fmt = history_format(uri)
    limits = limits or watch_limits(CandidatesConfig())
    paths = [m.path for m in FileSystems.match([uri])[0].metadata_list]
    if not paths:
        raise FileNotFoundError(f"watch history {uri!r}: no such file")
    events: list[WatchEvent | Skip] = []
    for path in sorted(paths):
        with FileSystems.open(path) as handle:
            events.extend(read_watch_events(handle, fmt, limits, path))
    return events


def watch_weights(weights: np.ndarray, timestamps: list[Optional[float]],
                  half_life_days: Optional[float]) -> np.ndarray:
    """Each watch's weight, halved every `half_life_days` before the latest dated watch (None: no decay)."""
    weights = np.asarray(weights, dtype=np.float64)
    dated = [t for t in timestamps if t is not None]
    if not half_life_days or not dated:
        return weights
    latest = max(dated)
    ages_days = np.array([(latest - t) / 86400.0 if t is not None else 0.0 for t in timestamps])
    return weights * np.power(0.5, ages_days / half_life_days)


def weighted_query(vectors: np.ndarray, weights: np.ndarray) -> Optional[np.ndarray]:
    """The unit-length weighted average of `vectors` [n, d], or None when it is zero.

    The weights are scaled to a largest of 1 before summing (the direction is the same), so finite inputs never
    overflow, whatever their size; a NaN or infinite input gives a vector that is not finite, for the caller to
    refuse."""
    weights = np.asarray(weights, dtype=np.float64)
    largest = np.max(np.abs(weights)) if weights.size else 0.0
    if largest == 0:
        return None
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf inputs: a non-finite result, not a warning
        total = ((weights / largest)[:, None] * np.asarray(vectors, dtype=np.float64)).sum(axis=0)
        norm = np.linalg.norm(total)
    if np.isfinite(norm) and norm <= 1e-12:
        return None
    with np.errstate(invalid="ignore"):
        return (total / norm).astype(np.float32)


def user_query(user_id: str, watches: Iterable[tuple[WatchEvent, Optional[np.ndarray]]],
               half_life_days: Optional[float]) -> UserQuery | Skip:
    """A user's query from their watches, each paired with the title's embedding (None: not embedded)."""
    watches = list(watches)
    watched = frozenset(event.title_id for event, _ in watches)
    embedded = [(event, vector) for event, vector in watches if vector is not None]
    if not embedded:
        return Skip(user_id, "", SkipReason.NO_EMBEDDED_TITLE,
                    f"none of {len(watched)} watched titles has an embedding")
    weights = watch_weights(np.array([e.weight for e, _ in embedded]), [e.timestamp for e, _ in embedded],
                            half_life_days)
    vectors = np.stack([v for _, v in embedded])
    not_finite = sorted({e.title_id for e, v in embedded if not np.isfinite(v).all()})
    if not_finite:
        return Skip(user_id, "", SkipReason.NON_FINITE_QUERY,
                    f"the embeddings of {', '.join(not_finite[:5])} are not finite")
    vector = weighted_query(vectors, weights)
    if vector is None:
        return Skip(user_id, "", SkipReason.ZERO_WEIGHT, "the weighted average of the watched titles is zero")
    if not np.isfinite(vector).all():
        return Skip(user_id, "", SkipReason.NON_FINITE_QUERY, "the weighted average of the watched titles is not "
                    "finite")
    return UserQuery(user_id, vector, watched)


# --- Beam ----------------------------------------------------------------------------------------------------
class ReadWatchHistory(beam.PTransform):
    """history URI (file or glob) → `WatchEvent`s; unusable rows on the `skipped` output as `Skip`s."""

    def __init__(self, uri: str, limits: WatchLimits):
        super().__init__()
        self._uri, self._limits = uri, limits
        self._format = history_format(uri)

    def expand(self, pbegin):
        fmt, limits = self._format, self._limits

        def parse(readable):
            watches = Metrics.counter(METRICS_NAMESPACE, "watches")
            with readable.open() as handle:
                for item in read_watch_events(handle, fmt, limits, readable.metadata.path):
                    if isinstance(item, Skip):
                        yield beam.pvalue.TaggedOutput(SKIPPED_TAG, item)
                    else:
                        watches.inc()
                        yield item

        return (pbegin
                | "MatchHistoryFiles" >> fileio.MatchFiles(self._uri, empty_match_treatment="DISALLOW")
                | "OpenHistoryFiles" >> fileio.ReadMatches()
                | "ParseHistoryRows" >> beam.FlatMap(parse).with_outputs(SKIPPED_TAG, main="events"))


class UserQueries(beam.PTransform):
    """(`WatchEvent`s, (title_id, embedding) pairs) → `UserQuery`s; users without one on `skipped` as `Skip`s."""

    def __init__(self, half_life_days: Optional[float]):
        super().__init__()
        self._half_life_days = half_life_days

    def expand(self, inputs):
        events, embeddings = inputs
        half_life = self._half_life_days

        def attach_embedding(joined):
            _, grouped = joined
            vectors = list(grouped["embedding"])
            vector = vectors[0] if vectors else None
            without_embedding = Metrics.counter(METRICS_NAMESPACE, "watches_without_embedding")
            for event in grouped["events"]:  # a popular title's watches are many: streamed, never listed
                if vector is None:
                    without_embedding.inc()
                yield event.user_id, (event, vector)

        def to_query(keyed):
            result = user_query(keyed[0], keyed[1], half_life)
            yield beam.pvalue.TaggedOutput(SKIPPED_TAG, result) if isinstance(result, Skip) else result

        return ({"events": events | "KeyWatchByTitle" >> beam.Map(lambda e: (e.title_id, e)),
                 "embedding": embeddings}
                | "JoinWatchesWithEmbeddings" >> beam.CoGroupByKey()
                | "AttachEmbedding" >> beam.FlatMap(attach_embedding)
                | "GroupWatchesByUser" >> beam.GroupByKey()
                | "BuildUserQuery" >> beam.FlatMap(to_query).with_outputs(SKIPPED_TAG, main="queries"))
