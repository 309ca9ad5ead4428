"""Data contracts, defined once: reject reasons, feature names, Parquet schemas, file names.

Writers, readers and tests import these; nothing else spells a column or file name by hand.
"""
from __future__ import annotations

import pyarrow as pa

# --- catalog manifest -------------------------------------------------------------------------------------
CATALOG_COLUMNS = ("title_id", "title", "genres", "poster_uri")


class RejectReason:
    """Reason codes of a row in `rejects/`; every rejected input row carries exactly one."""

    MISSING_TITLE_ID = "missing_title_id"
    DUPLICATE_TITLE_ID = "duplicate_title_id"
    NO_GENRES = "no_genres"
    NO_POSTER = "no_poster"  # the row names no poster, or its file (local or gs://) does not exist
    UNREADABLE = "unreadable"  # the file exists but cannot be read (permissions, I/O errors after retries)
    ZERO_BYTES = "zero_bytes"
    FILE_TOO_LARGE = "file_too_large"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED_IMAGE = "truncated_image"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_SMALL = "too_small"
    INFERENCE_FAILED = "inference_failed"
    MALFORMED_RECORD = "malformed_record"  # a manifest line that does not parse as one record (its line number)
    POSTER_OUTSIDE_ROOTS = "poster_outside_roots"  # a poster uri outside catalog.allowed_roots: never read
    UNDECODABLE_IMAGE = "undecodable_image"  # PIL reads it, the model's decoder (TensorFlow) refuses it
    # Posters by URL (pipelines/common/http_posters.py, settings `http.*`); retried ones after the last attempt.
    HTTP_404 = "http_404"  # 404 Not Found or 410 Gone
    HTTP_403 = "http_403"  # 401 or 403: the server refuses to serve it
    HTTP_429 = "http_429"  # still rate-limited after http.retries
    HTTP_5XX = "http_5xx"  # a server error after http.retries
    HTTP_STATUS = "http_status"  # any other status that is not 2xx (the detail names it)
    HTTP_TIMEOUT = "http_timeout"  # no answer within the timeouts, or a download past http.total_timeout_s
    HTTP_CONNECTION = "http_connection"  # no connection (DNS, refused, reset, TLS) after http.retries
    HTTP_TOO_LARGE = "http_too_large"  # more than http.max_bytes
    HTTP_CONTENT_TYPE = "http_content_type"  # a Content-Type outside http.content_types (an error page, a script)
    HTTP_TOO_MANY_REDIRECTS = "http_too_many_redirects"  # more than http.max_redirects
    HTTP_ERROR = "http_error"  # a URL requests refuses (malformed, a redirect to another scheme)

    ALL = (MISSING_TITLE_ID, DUPLICATE_TITLE_ID, NO_GENRES, NO_POSTER, UNREADABLE, ZERO_BYTES, FILE_TOO_LARGE,
           NOT_AN_IMAGE, TRUNCATED_IMAGE, TOO_MANY_PIXELS, TOO_SMALL, INFERENCE_FAILED, MALFORMED_RECORD,
           POSTER_OUTSIDE_ROOTS, UNDECODABLE_IMAGE, HTTP_404, HTTP_403, HTTP_429, HTTP_5XX, HTTP_STATUS, HTTP_TIMEOUT,
           HTTP_CONNECTION, HTTP_TOO_LARGE, HTTP_CONTENT_TYPE, HTTP_TOO_MANY_REDIRECTS, HTTP_ERROR)


REJECTS_SCHEMA = pa.schema([
    ("title_id", pa.string()),
    ("uri", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
])

# --- preprocess output ------------------------------------------------------------------------------------
# Transformed TFRecord features (what the trainer reads):
#   title_id: bytes; image: bytes, a PNG of the poster already decoded and resized to the model's input
#   (uint8 RGB, see pipelines.common.pixels.poster_pixels); labels: float32[num_genres] multi-hot;
#   primary_genre: int64, vocabulary index of the first listed genre (the first one in the vocabulary; -1 when
#   none is, which only a vocab_top_k or vocab_frequency_threshold above 1 can cause).
FEATURE_TITLE_ID = "title_id"
FEATURE_IMAGE = "image"
FEATURE_LABELS = "labels"
FEATURE_PRIMARY_GENRE = "primary_genre"
GENRE_VOCABULARY_NAME = "genres"
# Raw input of the preprocessing_fn, beside title_id and image (the validated poster's encoded bytes).
RAW_FEATURE_GENRES = "genres"

# Titles whose posters are byte-identical or near-identical form a split group, split as one (its group_id is the
# group's smallest title_id; a title in no group splits by its own id): `pipelines.common.splits`. Written under
# `duplicate_groups/`, one row per title in a group of two or more; evaluate reads it to split the same way.
DUPLICATE_GROUPS_DIR = "duplicate_groups"
DUPLICATE_GROUPS_SCHEMA = pa.schema([
    ("title_id", pa.string()),
    ("group_id", pa.string()),
    ("image_sha256", pa.string()),
    ("dhash", pa.string()),  # hex; null when near-duplicate grouping is off
    ("split", pa.string()),  # "train" | "eval"
])
PREPROCESS_TRAIN_PREFIX = "train/part"
PREPROCESS_EVAL_PREFIX = "eval/part"
TRANSFORM_FN_DIR = "transform_fn"
TRANSFORMED_METADATA_DIR = "transformed_metadata"
# Side files and folders beside data files start with "_": pyarrow.dataset, pyarrow.parquet.read_table(dir),
# DuckDB and Spark skip such names, so an embeddings or candidates folder opens directly as a Parquet dataset.
REJECTS_DIR = "_rejects"
STATS_FILE = "_stats.json"
SUCCESS_FILE = "_SUCCESS"

# --- model export -----------------------------------------------------------------------------------------
MODEL_META_FILE = "model_meta.json"
SERVING_SIGNATURE = "serving_default"
SERVING_INPUT = "image_bytes"
SERVING_OUTPUT = "embedding"
# A second signature on decoded pixels (uint8 [None, input_size, input_size, 3] → the same embedding), in
# exports made by `posters export-model`: for callers that decode themselves (benchmarks of the bare model).
PIXELS_SIGNATURE = "embed_pixels"
PIXELS_INPUT = "pixels"
EMBEDDING_METRIC = "angular"
# `posters train --out OUT` writes OUT/model/ (the export above), and beside it:
TRAIN_MODEL_DIR = "model"
# {"baseline"|"phase1"|"phase2": pipelines.common.retrieval_metrics.retrieval_metrics() of the eval split}
EVAL_METRICS_FILE = "eval_metrics.json"
TRAINING_CURVES_FILE = "training_curves.png"
TRAIN_SUMMARY_FILE = "train_summary.json"


# --- embeddings -------------------------------------------------------------------------------------------
def embeddings_schema(dim: int, model_version: str, metric: str = EMBEDDING_METRIC) -> pa.Schema:
    """The Parquet schema of the embed pipeline's output; metadata carries dim, metric and model_version."""
    return pa.schema(
        [
            ("title_id", pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
            ("image_sha256", pa.string()),
            ("model_version", pa.string()),
            ("genres", pa.list_(pa.string())),
        ],
        metadata={"dim": str(dim), "metric": metric, "model_version": model_version},
    )


# What `posters embed` writes beside those columns (readers of vectors need not read it; files written before it
# existed lack it): the poster's object metadata when it was read, so that the next incremental run reads a
# poster's bytes only when its metadata differs. `uri`, `size` (bytes) and `updated` (modification time, seconds
# since the epoch) for every filesystem; on GCS also the object's `generation`, `crc32c` and `md5` (base64, as
# GCS gives them). Null when the metadata could not be looked up (the poster is then read every run). For an
# http(s) poster (nothing is looked up without a request): `uri`, `size` and the `etag` and `last_modified`
# headers the server sent, which the next run sends back (If-None-Match / If-Modified-Since); a 304 carries the
# title over without downloading its poster. Files written before `etag` existed lack the two fields.
POSTER_OBJECT_COLUMN = "poster_object"
POSTER_OBJECT_TYPE = pa.struct([
    ("uri", pa.string()),
    ("size", pa.int64()),
    ("updated", pa.float64()),
    ("generation", pa.int64()),
    ("crc32c", pa.string()),
    ("md5", pa.string()),
    ("etag", pa.string()),
    ("last_modified", pa.string()),
])


def embed_output_schema(dim: int, model_version: str, metric: str = EMBEDDING_METRIC) -> pa.Schema:
    """The schema of the files `posters embed` writes: `embeddings_schema` plus the nullable `poster_object`."""
    schema = embeddings_schema(dim, model_version, metric)
    return schema.append(pa.field(POSTER_OBJECT_COLUMN, POSTER_OBJECT_TYPE, nullable=True))


EMBEDDINGS_MANIFEST_FILE = "_manifest.json"
# Embeddings folders written before the side files were named with "_" (still read; such a folder does not open
# as a Parquet dataset: `rejects/` and the JSON files sit among the data files).
LEGACY_EMBEDDINGS_MANIFEST_FILE = "embeddings_manifest.json"

# --- index ------------------------------------------------------------------------------------------------
INDEX_MANIFEST_FILE = "manifest.json"
INDEX_ID_MAP_FILE = "id_map.parquet"  # one id map for every shard: versions built before per-shard maps
INDEX_CURRENT_FILE = "CURRENT"
# The id map beside the shards: every indexed title, its stable int64 faiss id, and the shard that holds it.
INDEX_ID_MAP_SCHEMA = pa.schema([
    ("title_id", pa.string()),
    ("id", pa.int64()),
    ("shard", pa.int32()),
])




def index_id_map_name(shard: int) -> str:
    """The id map of one shard (the titles that shard holds), written by the worker that builds the shard."""
    return f"id_map-{shard:05d}.parquet"


# Keys every index manifest carries (pipelines.index.pipeline writes them, pipelines.index.loader checks them):
# shards is a list of {"file", "count", "sha256", "bytes"}; id_map is a list of {"shard", "file", "count", "sha256"},
# one per shard (versions built before that hold one {"file", "sha256"} for all shards); metric is the faiss
# metric ("inner_product" on unit vectors, i.e. the embeddings' "angular"); recall_at_10 was measured at nprobe.
INDEX_MANIFEST_KEYS = ("version", "factory", "metric", "dim", "nlist", "nprobe", "count", "shards", "id_map",
                       "model_version", "recall_at_10", "build_s")


def index_shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.faiss"


# --- candidates -------------------------------------------------------------------------------------------
_SCORED_TITLE = pa.struct([("title_id", pa.string()), ("score", pa.float32())])

ITEM2ITEM_SCHEMA = pa.schema([
    ("title_id", pa.string()),
    ("neighbors", pa.list_(_SCORED_TITLE)),
    ("index_version", pa.string()),
    ("model_version", pa.string()),
])

USER_CANDIDATES_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("candidates", pa.list_(_SCORED_TITLE)),
    ("index_version", pa.string()),
    ("model_version", pa.string()),
])

WATCH_HISTORY_COLUMNS = ("user_id", "title_id", "timestamp", "weight")

# Candidates output layout: `<out>/item2item/part-*.parquet`, `<out>/user/part-*.parquet`,
# `<out>/_skipped/part-*.parquet` (watch rows and users that produced no query), `_candidates_summary.json`:
# `<out>/item2item` and `<out>/user` each open as a Parquet dataset; `<out>` itself holds only those two.
ITEM2ITEM_DIR = "item2item"
USER_CANDIDATES_DIR = "user"
SKIPPED_DIR = "_skipped"
CANDIDATES_SUMMARY_FILE = "_candidates_summary.json"


class SkipReason:
    """Why a watch-history row or a user produced no user→item query."""

    MALFORMED_WATCH = "malformed_watch"  # a row without user_id/title_id, or with a bad timestamp or weight
    NO_EMBEDDED_TITLE = "no_embedded_title"  # none of the user's watched titles has an embedding
    ZERO_WEIGHT = "zero_weight"  # the weighted average of the user's watched titles is zero
    BAD_WEIGHT = "bad_weight"  # a weight that is negative, NaN, infinite or above candidates.max_watch_weight
    FUTURE_TIMESTAMP = "future_timestamp"  # dated after the run started, by more than candidates.max_clock_skew_s
    TIMESTAMP_NOT_SECONDS = "timestamp_not_seconds"  # a number past the year 3000 in seconds: milliseconds or finer
    NON_FINITE_QUERY = "non_finite_query"  # the user's query is not finite (a watched title's embedding is NaN/inf)

    ALL = (MALFORMED_WATCH, NO_EMBEDDED_TITLE, ZERO_WEIGHT, BAD_WEIGHT, FUTURE_TIMESTAMP, TIMESTAMP_NOT_SECONDS,
           NON_FINITE_QUERY)


SKIPPED_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("title_id", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
])

# The nightly chain: `<root>/runs/<date>/` holds one run, `<root>/index/` the published index.
NIGHTLY_RUNS_DIR = "runs"
NIGHTLY_INDEX_DIR = "index"
NIGHTLY_LOCK_FILE = "nightly.lock"
NIGHTLY_SUMMARY_FILE = "summary.json"

# `posters evaluate --out DIR`: DIR/evaluation.json (the measures and the gates' failures), DIR/report.html (one
# self-contained page), DIR/pictures/*.png, DIR/projector/ (vectors.tsv, metadata.tsv, sprite.png,
# projector_config.json), DIR/_SUCCESS.
EVALUATION_FILE = "evaluation.json"
EVALUATION_REPORT_FILE = "report.html"
EVALUATION_PICTURES_DIR = "pictures"
EVALUATION_PROJECTOR_DIR = "projector"
