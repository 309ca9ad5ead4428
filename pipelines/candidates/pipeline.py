"""`posters candidates`: item→item and user→item top-k candidates from the published index (Beam + faiss).

    index lists ──▶ AllTitlesNeighbours (list groups) ────────────────▶ item2item/part-*.parquet
    ReadWatchHistory ──▶ UserQueriesFromIndex ──▶ TopNeighbours ──────▶ user/part-*.parquet
                               └── users and rows without a query ────▶ skipped/part-*.parquet

Every title's query is its own embedding (itself excluded from its neighbours); every user's is the normalised
weighted average of the titles they watched (`pipelines.candidates.watch_history`; watched titles excluded). On an
IVF-Flat index item→item reads each inverted list once for all the titles that probe it (`all_titles`: faiss'
`big_batch_search`, split by list groups), and a user's watched titles' vectors are read from the index
(`user_vectors`): no step shuffles the embeddings. Other indexes search title by title from the embeddings
(Flat, HNSW-Flat: user vectors still from the index; compressed: joined with the embeddings by title). User
queries are searched in batches, each only as deep as its own exclusions need (`search_by_depth`: one user with
thousands of watched titles does not deepen the others' searches). The index is copied and verified once per
machine (`MultiProcessShared` holds the copy) and memory-mapped by every worker process (`index_copy`), so its
vectors sit in the page cache once per machine, not once per process. The live index version is resolved once,
before the pipeline starts, so every worker searches the same version even if `CURRENT` moves meanwhile.
Outputs are written to a staging directory and published whole (`_SUCCESS` last), with a summary.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.utils import shared

from pipelines.candidates.all_titles import AllTitlesNeighbours, list_scan_applies, lists_per_group
from pipelines.candidates.index_copy import IndexCopy, index_copy_tag, open_index  # noqa: F401 (part of this API)
from pipelines.candidates.user_vectors import UserQueriesFromIndex, stores_exact_vectors
from pipelines.candidates.watch_history import (
    ReadWatchHistory,
    Skip,
    UserQueries,
    WatchLimits,
    history_format,
    watch_limits,
)
from pipelines.common import storage
from pipelines.common.command_line import command_parser, make_pipeline, parse_command
from pipelines.config import Config
from pipelines.contracts import (
    CANDIDATES_SUMMARY_FILE,
    INDEX_MANIFEST_FILE,
    ITEM2ITEM_DIR,
    ITEM2ITEM_SCHEMA,
    SKIPPED_DIR,
    SKIPPED_SCHEMA,
    USER_CANDIDATES_DIR,
    USER_CANDIDATES_SCHEMA,
)
from pipelines.embed.reader import EmbeddingsError, describe_embeddings, embedding_matrix, parquet_errors

log = logging.getLogger(__name__)
METRICS_NAMESPACE = "candidates"


class Query(NamedTuple):
    key: str  # the title_id or user_id the neighbours are for
    vector: np.ndarray  # float32 [d], unit length
    exclude: frozenset  # title_ids never returned for this query (the title itself, what the user watched)


@dataclass(frozen=True)
class CandidatesPlan:
    """Everything the pipeline needs, resolved before it starts."""

    index_uri: str  # the version directory of the index, pinned
    index_version: str
    model_version: str
    embedding_files: list[str]
    dim: int
    history_uri: str
    out_dir: str  # where the pipeline writes (a staging directory)
    k: int
    recency_half_life_days: Optional[float]
    query_batch_size: int
    faiss_threads: Optional[int]  # per worker process; None: faiss' default
    watch_limits: WatchLimits  # the weights and timestamps a usable watch row has, judged at the plan's time
    # item→item by list groups (`all_titles`): at most this many nearby inverted lists a group; None: query by query
    lists_per_group: Optional[int] = None
    index_shards: int = 1
    index_nlist: Optional[int] = None
    # user→item: watched titles' vectors read from the index (`user_vectors`; no shuffle of the embeddings)
    # where it stores them exactly; False: joined with the embeddings by title
    user_vectors_from_index: bool = False


# --- plain functions -------------------------------------------------------------------------------------------
def top_k_excluding(title_ids: list[str], scores, exclude: frozenset, k: int) -> list[dict]:
    """The first `k` (title_id, score) of a ranked result that are not in `exclude`, as contract structs."""
    kept = []
    for title_id, score in zip(title_ids, scores):
        if title_id and title_id not in exclude:
            kept.append({"title_id": title_id, "score": float(score)})
            if len(kept) == k:
                break
    return kept


def search_depth(k: int, excluded: int) -> int:
    """How deep a query with `excluded` titles to leave out is searched: k plus its exclusions rounded up to a
    power of two (so a batch needs a few searches, not one per query), never less than k + excluded."""
    return k + (1 << max(0, excluded - 1).bit_length() if excluded else 0)


def search_by_depth(index, batch: list[Query], k: int) -> Iterator[tuple[Query, list[dict]]]:
    """(query, its top-k) for a batch, searched in groups of queries that need the same depth: the old single
    search at k + the batch's largest exclusion made every query as deep as the heaviest user's."""
    groups: dict[int, list[Query]] = {}
    for query in batch:
        groups.setdefault(search_depth(k, len(query.exclude)), []).append(query)
    for depth, queries in sorted(groups.items()):
        vectors = np.stack([query.vector for query in queries]).astype(np.float32)
        title_ids, scores = index.search(vectors, depth)
        Metrics.counter(METRICS_NAMESPACE, "searches").inc()
        Metrics.counter(METRICS_NAMESPACE, "searched_depth").inc(depth * len(queries))
        for query, ids, row_scores in zip(queries, title_ids, scores):
            yield query, top_k_excluding(ids, row_scores, query.exclude, k)


def embedding_vectors(path: str, dim: int) -> Iterator[tuple[str, np.ndarray]]:
    """(title_id, float32 vector) for every row of one embeddings Parquet file, read in record batches."""
    with FileSystems.open(path, compression_type="uncompressed") as handle, parquet_errors(path):
        for batch in pq.ParquetFile(handle).iter_batches(columns=["title_id", "embedding"]):
            vectors = embedding_matrix(batch, dim)
            for title_id, vector in zip(batch.column("title_id").to_pylist(), vectors):
                yield title_id, vector.copy()


def _counted(element, name: str):
    Metrics.counter(METRICS_NAMESPACE, name).inc()
    return element


# --- PTransforms -----------------------------------------------------------------------------------------------
class ReadEmbeddingVectors(beam.PTransform):
    """Embeddings Parquet files (as listed by their manifest) → (title_id, vector)."""

    def __init__(self, files: list[str], dim: int):
        super().__init__()
        self._files, self._dim = files, dim

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self._files)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadVectors" >> beam.FlatMap(embedding_vectors, self._dim))


class SearchNeighbours(beam.DoFn):
    """A batch of `Query`s → (key, top-k neighbours) each. The index is the machine's one local copy
    (`IndexCopy`), memory-mapped; every DoFn given the same `index_handle` shares one mapping per process."""

    def __init__(self, index_handle: shared.Shared, index_uri: str, model_version: str, k: int,
                 faiss_threads: Optional[int] = None):
        self._index_uri, self._model_version, self._k = index_uri, model_version, k
        self._faiss_threads = faiss_threads
        self._shared = index_handle
        self._index = self._copy = None

    def setup(self):
        self._copy, self._index = open_index(self._shared, self._index_uri, self._model_version, self._faiss_threads)

    def process(self, batch: list[Query]):
        Metrics.counter(METRICS_NAMESPACE, "query_batches").inc()
        for query, neighbours in search_by_depth(self._index, batch, self._k):
            yield query.key, neighbours


class TopNeighbours(beam.PTransform):
    """`Query`s → (key, [{title_id, score}] best first), searched in batches in the index `index_handle`
    loads (one `shared.Shared()` for all the searches of a pipeline, so the index is loaded once per worker)."""

    def __init__(self, plan: CandidatesPlan, index_handle: shared.Shared):
        super().__init__()
        self._plan, self._index_handle = plan, index_handle

    def expand(self, queries):
        plan = self._plan
        return (queries
                | "BatchQueries" >> beam.BatchElements(min_batch_size=1, max_batch_size=plan.query_batch_size)
                | "SearchIndex" >> beam.ParDo(SearchNeighbours(self._index_handle, plan.index_uri,
                                                               plan.model_version, plan.k, plan.faiss_threads)))


# the Arrow rows a writer holds before it writes a row group: on DirectRunner a worker's whole share of item→item
# arrives as one bundle, so Beam's default (64 MB) filled with ~260 B rows grows with the catalog up to that size
ROW_GROUP_BYTES = 8 << 20


class WriteCandidates(beam.PTransform):
    """(key, neighbours) → one Parquet table of the contract (`item2item` or `user`), with versions, counted."""

    def __init__(self, plan: CandidatesPlan, directory: str, schema, key_column: str, list_column: str):
        super().__init__()
        self._plan, self._directory, self._schema = plan, directory, schema
        self._key_column, self._list_column = key_column, list_column

    def expand(self, results):
        plan, key_column, list_column = self._plan, self._key_column, self._list_column

        def to_row(result):
            return {key_column: result[0], list_column: result[1], "index_version": plan.index_version,
                    "model_version": plan.model_version}

        return (results
                | "ToRows" >> beam.Map(to_row)
                | "Count" >> beam.Map(_counted, f"{self._directory}_rows")
                | "WriteParquet" >> beam.io.WriteToParquet(storage.join(plan.out_dir, self._directory, "part"),
                                                           self._schema, file_name_suffix=".parquet",
                                                           row_group_buffer_size=ROW_GROUP_BYTES))


class WriteSkipped(beam.PTransform):
    """`Skip`s → `skipped/part-*.parquet`, counted by reason."""

    def __init__(self, out_dir: str):
        super().__init__()
        self._out_dir = out_dir

    def expand(self, skips):
        return (skips
                | "CountByReason" >> beam.Map(lambda skip: _counted(skip, f"skipped_{skip.reason}"))
                | "ToRows" >> beam.Map(Skip._asdict)
                | "WriteParquet" >> beam.io.WriteToParquet(storage.join(self._out_dir, SKIPPED_DIR, "part"),
                                                           SKIPPED_SCHEMA, file_name_suffix=".parquet"))


def build_item2item(pipeline: beam.Pipeline, plan: CandidatesPlan, index_handle: shared.Shared,
                    embeddings: Optional[beam.PCollection] = None) -> None:
    """Wires item→item: every title's top-k by list groups where the index allows it (`all_titles`), else query
    by query from `embeddings` ((title_id, vector) pairs; read here when None)."""
    if plan.lists_per_group:
        similar = pipeline | "SimilarTitles" >> AllTitlesNeighbours(plan, index_handle)
    else:
        if embeddings is None:
            embeddings = pipeline | "ReadEmbeddings" >> ReadEmbeddingVectors(plan.embedding_files, plan.dim)
        similar = (embeddings
                   | "ItemQueries" >> beam.Map(lambda kv: Query(kv[0], kv[1], frozenset([kv[0]])))
                   | "SimilarTitles" >> TopNeighbours(plan, index_handle))
    similar | "WriteItem2Item" >> WriteCandidates(plan, ITEM2ITEM_DIR, ITEM2ITEM_SCHEMA, "title_id", "neighbors")


def build_pipeline(pipeline: beam.Pipeline, plan: CandidatesPlan) -> None:
    """Wires the candidates pipeline: item→item, user→item and the skipped rows."""
    index_handle = shared.Shared()  # every search shares one loaded index per worker process
    embeddings = None
    if not (plan.lists_per_group and plan.user_vectors_from_index):  # a step still needs (title_id, vector)s
        embeddings = pipeline | "ReadEmbeddings" >> ReadEmbeddingVectors(plan.embedding_files, plan.dim)
    build_item2item(pipeline, plan, index_handle, embeddings)
    history = pipeline | "ReadWatchHistory" >> ReadWatchHistory(plan.history_uri, plan.watch_limits)
    if plan.user_vectors_from_index:
        users = history.events | "UserQueries" >> UserQueriesFromIndex(plan, index_handle)
    else:
        users = (history.events, embeddings) | "UserQueries" >> UserQueries(plan.recency_half_life_days)
    (users.queries
     | "AsQueries" >> beam.Map(lambda user: Query(user.user_id, user.vector, user.watched))
     | "UserCandidates" >> TopNeighbours(plan, index_handle)
     | "WriteUserCandidates" >> WriteCandidates(plan, USER_CANDIDATES_DIR, USER_CANDIDATES_SCHEMA, "user_id",
                                                "candidates"))
    ((history.skipped, users.skipped)
     | "AllSkipped" >> beam.Flatten()
     | "WriteSkipped" >> WriteSkipped(plan.out_dir))


# --- the job ---------------------------------------------------------------------------------------------------
def resolve_index(index_uri: str) -> tuple[str, dict]:
    """(version directory, manifest) of the live index under `index_uri` (a published root with `CURRENT`, or one
    version directory); raises IndexLoadError when there is none."""
    from pipelines.index.loader import resolve_version_dir

    version_dir = resolve_version_dir(index_uri)
    return version_dir, storage.read_json(storage.join(version_dir, INDEX_MANIFEST_FILE))


def item_lists_per_group(manifest: dict, rows: int, config: Config) -> Optional[int]:
    """Lists per group for the all-titles list scan, or None where the index is searched query by query."""
    settings = config.candidates
    if settings.all_titles_search != "list_scan" or not list_scan_applies(manifest, rows):
        return None
    return lists_per_group(manifest["nlist"], rows, manifest["nprobe"] or 1, settings.all_titles_queries_per_group)


def plan_candidates(index_uri: str, embeddings_uri: str, history_uri: str, out_dir: str,
                    config: Config) -> CandidatesPlan:
    """Checks the inputs agree (same model) and pins the index version; raises ValueError for user errors."""
    history_format(history_uri)
    if not FileSystems.match([history_uri])[0].metadata_list:
        raise FileNotFoundError(f"watch history {history_uri!r}: no such file")
    info = describe_embeddings(embeddings_uri)
    version_dir, manifest = resolve_index(index_uri)
    version, index_model = manifest["version"], manifest["model_version"]
    if index_model != info.model_version:
        raise ValueError(f"the index at {version_dir} was built from model {index_model}'s embeddings but "
                         f"{embeddings_uri} holds model {info.model_version}'s: pass the embeddings the index was "
                         "built from, or rebuild the index")
    return CandidatesPlan(index_uri=version_dir, index_version=version, model_version=index_model,
                          embedding_files=info.files, dim=info.dim, history_uri=history_uri, out_dir=out_dir,
                          k=config.candidates.k, recency_half_life_days=config.candidates.recency_half_life_days,
                          query_batch_size=config.candidates.query_batch_size,
                          faiss_threads=config.candidates.faiss_threads,
                          watch_limits=watch_limits(config.candidates),
                          lists_per_group=item_lists_per_group(manifest, info.rows, config),
                          index_shards=len(manifest["shards"]), index_nlist=manifest.get("nlist"),
                          user_vectors_from_index=stores_exact_vectors(manifest))


def pipeline_counters(result) -> dict[str, int]:
    """Our Beam counters of a finished pipeline, summed over steps."""
    counters: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        if counter.key.metric.namespace in (METRICS_NAMESPACE, "watch_history"):
            value = counter.committed if counter.committed is not None else counter.attempted
            counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + int(value or 0)
    return counters


def run_candidates(plan: CandidatesPlan, final_out: str, pipeline: beam.Pipeline) -> dict:
    """Runs the pipeline into `plan.out_dir` (staging), then publishes it to `final_out`; returns the summary."""
    started = time.time()
    build_pipeline(pipeline, plan)
    result = pipeline.run()
    result.wait_until_finish()
    counters = pipeline_counters(result)
    summary = {
        "titles": counters.get(f"{ITEM2ITEM_DIR}_rows", 0),
        "users": counters.get(f"{USER_CANDIDATES_DIR}_rows", 0),
        "skipped": {key.removeprefix("skipped_"): value for key, value in sorted(counters.items())
                    if key.startswith("skipped_")},
        "watches": counters.get("watches", 0),
        "watches_of_titles_without_embedding": counters.get("watches_without_embedding", 0),
        # item→item's list scan: (title, other list group) pairs routed (the first shuffle's rows) and the results
        # from other groups that reach their title's (k+1)-th home score (the second shuffle's rows)
        "shuffled_group_probes": counters.get("shuffled_group_probes", 0),
        "shuffled_partial_entries": counters.get("shuffled_partial_entries", 0),
        "k": plan.k, "index_version": plan.index_version, "model_version": plan.model_version,
        "index": plan.index_uri, "history": plan.history_uri, "out": final_out,
        "recency_half_life_days": plan.recency_half_life_days, "seconds": round(time.time() - started, 1),
    }
    storage.write_json(storage.join(plan.out_dir, CANDIDATES_SUMMARY_FILE), summary)
    storage.publish_directory(plan.out_dir, final_out, summary)
    return summary


def print_summary(summary: dict) -> None:
    skipped = ", ".join(f"{n} {reason}" for reason, n in summary["skipped"].items()) or "none"
    print(f"candidates: {summary['titles']} titles and {summary['users']} users, top {summary['k']} each "
          f"(index {summary['index_version']}, model {summary['model_version']}); skipped: {skipped}; "
          f"{summary['seconds']} s → {summary['out']}")


def _parse(argv: list[str]):
    parser = command_parser("candidates", "item→item and user→item top-k candidates from the published index")
    parser.add_argument("--index", required=True, help="published index root (with CURRENT) or a version dir")
    parser.add_argument("--embeddings", required=True, help="embeddings the index was built from")
    parser.add_argument("--history", required=True, help="watch history: *.csv, *.jsonl or *.parquet (or a glob)")
    parser.add_argument("--out", required=True, help="output directory (replaced whole when the job succeeds)")
    return parse_command(parser, argv)


def run(argv: list[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs `posters candidates` and returns its summary. Raises ValueError, `EmbeddingsError` or
    FileNotFoundError for inputs the user must fix; a failed pipeline raises and publishes nothing."""
    args, config, beam_args = _parse(sys.argv[1:] if argv is None else argv)
    storage.check_output_location(args.out, {"--index": args.index, "--embeddings": args.embeddings,
                                             "--history": args.history})
    staging = storage.staging_uri(args.out)
    plan = plan_candidates(args.index, args.embeddings, args.history, staging, config)
    log.info("candidates plan: %s", {k: v for k, v in asdict(plan).items() if k != "embedding_files"})
    try:
        return run_candidates(plan, args.out, make_pipeline(config, beam_args, save_main_session, test_pipeline))
    except BaseException:
        storage.delete_tree(staging)
        raise


def main(argv: list[str]) -> int:
    """Exit codes: 0 done, 1 inputs to fix or a failed run (one line saying why), 2 bad usage (argparse)."""
    from pipelines.index.loader import IndexLoadError

    try:
        summary = run(argv)
    except (EmbeddingsError, IndexLoadError, ValueError, FileNotFoundError) as err:
        print(f"posters candidates: {err}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0
