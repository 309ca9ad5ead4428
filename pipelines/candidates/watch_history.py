"""Watch history: reading it by URI (CSV, JSONL or Parquet) and turning each user's watches into one query.

A row is `user_id`, `title_id` and optionally `timestamp` (seconds since the epoch or ISO 8601) and `weight`
(default 1). A user's query is the L2-normalised weighted average of the embeddings of the titles they
watched; with a recency half-life, a watch's weight also halves every `half_life_days` before the user's
latest watch. (The reference time cancels out in the normalisation, so the user's own latest watch is as good
as "now" and keeps reruns deterministic.) Undated watches get no decay.

Rows that cannot be used are never dropped silently: they come out as `Skip` records with a reason.
"""
from __future__ import annotations

import csv
import io
import json
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

from pipelines.contracts import WATCH_HISTORY_COLUMNS, SkipReason

_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".deflate")
SKIPPED_TAG = "skipped"
METRICS_NAMESPACE = "watch_history"


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


def watch_event(row: dict) -> WatchEvent | Skip:
    """One history row → a `WatchEvent`, or a `Skip` that says what is wrong with it."""
    user_id, title_id = (str(row.get(c) or "").strip() for c in ("user_id", "title_id"))
    if not user_id or not title_id:
        return Skip(user_id, title_id, SkipReason.MALFORMED_WATCH, f"missing user_id or title_id: {row}")
    try:
        timestamp = parse_timestamp(row.get("timestamp"))
        raw_weight = row.get("weight")
        weight = 1.0 if raw_weight is None or raw_weight == "" else float(raw_weight)
    except ValueError as err:
        return Skip(user_id, title_id, SkipReason.MALFORMED_WATCH, str(err))
    if not np.isfinite(weight) or weight < 0:
        return Skip(user_id, title_id, SkipReason.MALFORMED_WATCH, f"weight must be >= 0, got {raw_weight!r}")
    return WatchEvent(user_id, title_id, timestamp, weight)


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


def read_watch_events(handle: IO[bytes], fmt: str, source: str = "") -> Iterator[WatchEvent | Skip]:
    """Every row of one history file, as `WatchEvent`s and `Skip`s; a file that cannot be parsed raises."""
    for row in _rows(handle, fmt, source):
        yield row if isinstance(row, Skip) else watch_event(row)


def read_watch_history(uri: str) -> list[WatchEvent | Skip]:
    """Every row of the history at `uri` (a file or a glob), outside Beam."""
    fmt = history_format(uri)
    paths = [m.path for m in FileSystems.match([uri])[0].metadata_list]
    if not paths:
        raise FileNotFoundError(f"watch history {uri!r}: no such file")
    events: list[WatchEvent | Skip] = []
    for path in sorted(paths):
        with FileSystems.open(path) as handle:
            events.extend(read_watch_events(handle, fmt, path))
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
    """The unit-length weighted average of `vectors` [n, d], or None when it is zero."""
    total = (np.asarray(weights, dtype=np.float64)[:, None] * np.asarray(vectors, dtype=np.float64)).sum(axis=0)
    norm = np.linalg.norm(total)
    return (total / norm).astype(np.float32) if norm > 1e-12 else None


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
    vector = weighted_query(np.stack([v for _, v in embedded]), weights)
    if vector is None:
        return Skip(user_id, "", SkipReason.ZERO_WEIGHT, "the weighted average of the watched titles is zero")
    return UserQuery(user_id, vector, watched)


def user_queries(events: Iterable[WatchEvent], embeddings: dict[str, np.ndarray],
                 half_life_days: Optional[float]) -> list[UserQuery | Skip]:
    """`user_query` for every user in `events`, outside Beam (sorted by user_id)."""
    by_user: dict[str, list] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append((event, embeddings.get(event.title_id)))
    return [user_query(user, watches, half_life_days) for user, watches in sorted(by_user.items())]


# --- Beam ----------------------------------------------------------------------------------------------------
class ReadWatchHistory(beam.PTransform):
    """history URI (file or glob) → `WatchEvent`s; malformed rows on the `skipped` output as `Skip`s."""

    def __init__(self, uri: str):
        super().__init__()
        self._uri = uri
        self._format = history_format(uri)

    def expand(self, pbegin):
        fmt = self._format

        def parse(readable):
            watches = Metrics.counter(METRICS_NAMESPACE, "watches")
            with readable.open() as handle:
                for item in read_watch_events(handle, fmt, readable.metadata.path):
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
