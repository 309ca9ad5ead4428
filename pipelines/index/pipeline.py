"""`posters index`: embeddings (Parquet) → a sharded FAISS index, verified and published atomically.

    posters index --config C --embeddings URI --out URI [beam options]
    posters index rollback --out URI

The Beam graph, step by step:
  ReadEmbeddings      the files of the embeddings location, as Arrow tables
  ToVectorBatches     title ids → stable int64 ids; vectors checked to be unit-norm
  IdHistogram         a first pass over the title ids alone: how many ids fall in each of 2^14 id ranges
  SampleSmallestIds   the titles with the smallest ids: a uniform, reproducible sample (ids are hash values);
                      each bundle keeps only rows below the id range where the histogram reaches the sample
                      size, so no combiner holds more than the sample and one range's worth of rows;
                      its first `recall_queries` are the recall queries, the rest train the index
  TrainEmptyIndex     one empty index trained once (coarse quantiser), shared with every shard
  GroupByShard        shard = id mod S, so every vector lands in exactly one shard
  BuildShards         each shard: add_with_ids into a copy of the trained index, written with its sha256, and
                      that shard's id map; plus the queries' top-k in this shard, exact and approximate (at
                      each nprobe tried)
  WriteManifest       the shards' small summaries (files, checksums, the queries' top-k) meet in one place:
                      merged top-k → recall@10 per nprobe, then `manifest.json` (written last)
No step holds every vector or every title id in one process.
The driver then applies the degenerate-scores gate (the share of recall queries whose exact
top-10 neighbour scores are all tied, as every query's are when all embeddings are equal: a collapsed model), the
recall gate, and swaps `CURRENT` (pipelines.common.versions); any failure deletes the
version directory, so nothing half-built is ever published.
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
import time
from collections.abc import Iterable
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.parquetio import ReadAllFromParquetBatched
from apache_beam.metrics import Metrics

from pipelines.common import storage, versions
from pipelines.common.collapse import tied_share
from pipelines.common.command_line import command_parser, make_pipeline, parse_command
from pipelines.config import Config, IndexConfig
from pipelines.contracts import (
    EMBEDDING_METRIC,
    INDEX_ID_MAP_SCHEMA,
    INDEX_MANIFEST_FILE,
    index_id_map_name,
    index_shard_name,
)
from pipelines.embed.reader import EmbeddingsInfo, describe_embeddings, embedding_matrix
from pipelines.index import backends
from pipelines.index import faiss_index as vi

log = logging.getLogger(__name__)

RECALL_K = 10
ID_RANGE_BITS = 14  # the sample threshold's resolution: ids (63 bits) fall in 2^14 ranges of equal width


class RecallTooLow(vi.IndexBuildError):
    """The built index missed the recall gate; nothing was published."""


class DegenerateScores(vi.IndexBuildError):
    """Most queries' neighbour scores are tied (e.g. every embedding equal); nothing was published."""


class VectorBatch(NamedTuple):
    ids: np.ndarray  # int64 [b]
    title_ids: pa.Array  # string [b] (a list is accepted too): Arrow, so that a batch pickles as buffers and
    #                      taking rows is one C call, not a Python loop over every title id
    vectors: np.ndarray  # float32 [b, dim]


class ShardResult(NamedTuple):
    shard: int
    file: str
    count: int
    sha256: str
    bytes: int
    id_map: dict  # {"shard", "file", "count", "sha256"} of this shard's id map
    exact: tuple  # (scores, ids) of the recall queries in this shard, exact
    approx: dict  # nprobe → (scores, ids) of the recall queries in this shard, through the shard's index


# --- plain functions --------------------------------------------------------------------------------------
def to_vector_batch(table: pa.Table, dim: int, model_version: str) -> VectorBatch:
    """Arrow rows → ids, title ids and a float32 matrix; refuses non-unit vectors and other models' rows."""
    titles = title_array(table.column("title_id"))
    title_ids = titles.to_pylist()
    versions = set(table.column("model_version").unique().to_pylist())
    if versions - {model_version}:
        raise vi.IndexBuildError(f"rows of model_version {sorted(versions - {model_version})} among "
                                 f"{model_version!r} embeddings; one index holds one model's vectors")
    vectors = embedding_matrix(table, dim)
    vi.check_unit_norm(vectors, title_ids)
    return VectorBatch(vi.stable_ids(title_ids), titles, vectors)


def title_array(title_ids) -> pa.Array:
    """Title ids (an Arrow array or chunked array, or a list) as one Arrow string array."""
    if isinstance(title_ids, pa.ChunkedArray):
        title_ids = title_ids.combine_chunks()
    if not isinstance(title_ids, pa.Array):
        return pa.array(title_ids, pa.string())
    return title_ids if title_ids.type == pa.string() else title_ids.cast(pa.string())


def concat_batches(batches: Iterable[VectorBatch], dim: int) -> VectorBatch:
    batches = [b for b in batches if len(b.ids)]
    if not batches:
        return empty_batch(dim)
    return VectorBatch(np.concatenate([b.ids for b in batches]),
                       pa.concat_arrays([title_array(b.title_ids) for b in batches]),
                       np.concatenate([b.vectors for b in batches]))


def empty_batch(dim: int) -> VectorBatch:
    return VectorBatch(np.empty(0, np.int64), pa.array([], pa.string()), np.empty((0, dim), np.float32))


def take_rows(batch: VectorBatch, rows: np.ndarray) -> VectorBatch:
    return VectorBatch(batch.ids[rows], title_array(batch.title_ids).take(np.asarray(rows, np.int64)),
                       batch.vectors[rows])


def smallest_ids(batch: VectorBatch, size: int) -> VectorBatch:
    """The `size` rows with the smallest ids, in id order."""
    rows = np.argsort(batch.ids, kind="stable")[:size]
    return take_rows(batch, rows)


def id_range(ids: np.ndarray) -> np.ndarray:
    """Which of the 2^ID_RANGE_BITS equal id ranges each (non-negative, 63-bit) id falls in."""
    return (ids >> (63 - ID_RANGE_BITS)).astype(np.int64)


def id_histogram(title_ids: list) -> np.ndarray:
    """How many of these titles' ids fall in each id range (int64 [2^ID_RANGE_BITS])."""
    return np.bincount(id_range(vi.stable_ids(title_ids)), minlength=1 << ID_RANGE_BITS)


def sample_range_limit(histogram: np.ndarray, size: int) -> int:
    """The last id range a sample of the `size` smallest ids needs: ranges up to it hold at least `size` ids
    (or every id), and at most one range's count more."""
    reached = np.flatnonzero(np.cumsum(histogram) >= size)
    return int(reached[0]) if reached.size else len(histogram) - 1


def rows_below_limit(batch: VectorBatch, limit: int) -> VectorBatch:
    """The rows of a batch in id ranges up to `limit`: the only rows that can be among the smallest ids."""
    return take_rows(batch, np.flatnonzero(id_range(batch.ids) <= limit))


def split_by_shard(batch: VectorBatch, num_shards: int) -> Iterable[tuple[int, VectorBatch]]:
    shards = vi.shard_of(batch.ids, num_shards)
    for shard in np.unique(shards):
        yield int(shard), take_rows(batch, np.flatnonzero(shards == shard))


def split_sample(sample: VectorBatch, num_queries: int) -> tuple[VectorBatch, VectorBatch]:
    """(recall queries, training vectors): the smallest ids are queries, the rest train the index.

    A catalog too small to spare any vectors trains on the whole sample.
    """
    queries = take_rows(sample, np.arange(min(num_queries, len(sample.ids))))
    training = take_rows(sample, np.arange(len(queries.ids), len(sample.ids)))
    return queries, training if len(training.ids) else sample


def build_shard(shard: int, batch: VectorBatch, empty_index: bytes, queries: VectorBatch, nprobes: list,
                version_dir: str, plan: Optional[vi.IndexPlan] = None,
                settings: Optional[IndexConfig] = None) -> ShardResult:
    """Adds one shard's vectors to a copy of the trained index, writes it and the shard's id map, and answers
    the recall queries."""
    vi.check_unique_ids(batch.ids, title_array(batch.title_ids))
    id_map = write_id_map(shard, batch, version_dir)
    plan, settings = plan or vi.IndexPlan("Flat", None, 1, 0), settings or IndexConfig()
    index = backends.add_to_shard(plan, empty_index, batch.ids, batch.vectors, settings, queries.vectors.shape[1])
    data = backends.serialize(index)
    name = index_shard_name(shard)
    storage.write_bytes(storage.join(version_dir, name), data)
    exact = vi.exact_search(queries.vectors, batch.vectors, batch.ids, RECALL_K + 1)
    approx = {}
    for nprobe in nprobes:
        backends.set_breadth(index, nprobe)
        approx[nprobe] = vi.search(index, queries.vectors, RECALL_K + 1)
    return ShardResult(shard, name, len(batch.ids), vi.sha256_hex(data), len(data), id_map, exact, approx)


def recall_by_nprobe(results: list[ShardResult], queries: VectorBatch) -> dict:
    """recall@10 of the merged shard results against merged exact results, the queries' own ids left out."""
    def merged(parts):
        return vi.without_self(vi.merge_results(parts, RECALL_K + 1)[1], queries.ids, RECALL_K)

    truth = merged([r.exact for r in results])
    return {nprobe: vi.recall_at_k(merged([r.approx[nprobe] for r in results]), truth, RECALL_K)
            for nprobe in results[0].approx}


def tied_neighbour_share(results: list[ShardResult], queries: VectorBatch) -> float:
    """Share of the recall queries whose exact top-10 scores (their own row left out) are all tied."""
    scores, ids = vi.merge_results([r.exact for r in results], RECALL_K + 1)
    others = (ids >= 0) & (ids != queries.ids[:, None])
    # Each query's first RECALL_K other neighbours (a query whose own row is not among its top 11 keeps 11).
    kept = others & (np.cumsum(others, axis=1) <= RECALL_K)
    return round(tied_share(scores, kept), 4)


def choose_nprobe(recalls: dict, min_recall: float):
    """The smallest nprobe that reaches `min_recall`, else the one with the best recall."""
    passing = [nprobe for nprobe, recall in recalls.items() if recall >= min_recall]
    if passing:
        return passing[0]
    return max(recalls, key=lambda nprobe: (recalls[nprobe], -(nprobe or 0)))


def id_map_table(shard: int, batch: VectorBatch) -> pa.Table:
    """One shard's titles with their ids, sorted by id."""
    order = np.argsort(batch.ids, kind="stable")
    return pa.table({"title_id": title_array(batch.title_ids).take(order), "id": batch.ids[order],
                     "shard": np.full(len(order), shard, np.int32)}, schema=INDEX_ID_MAP_SCHEMA)


def write_id_map(shard: int, batch: VectorBatch, version_dir: str) -> dict:
    """Writes one shard's id map beside it; returns its manifest entry."""
    buffer = io.BytesIO()
    pq.write_table(id_map_table(shard, batch), buffer)
    name = index_id_map_name(shard)
    storage.write_bytes(storage.join(version_dir, name), buffer.getvalue())
    return {"shard": shard, "file": name, "count": len(batch.ids), "sha256": vi.sha256_hex(buffer.getvalue())}


def write_version(results: list[ShardResult], queries: VectorBatch, plan: vi.IndexPlan, info: EmbeddingsInfo,
                  settings: IndexConfig, version_dir: str, started: float) -> dict:
    """Writes the manifest (last: a version with a manifest is complete) from the shards' summaries; returns it."""
    results = sorted(results, key=lambda r: r.shard)
    total = sum(r.count for r in results)
    assert total == info.rows, f"the shards hold {total} vectors, the embeddings {info.rows}"
    recalls = recall_by_nprobe(results, queries)
    nprobe = choose_nprobe(recalls, settings.min_recall_at_10)
    manifest = {
        "version": version_dir.rstrip("/").rsplit("/", 1)[-1],
        **backends.manifest_fields(plan, settings, info.dim),
        "factory": plan.factory, "metric": vi.METRIC_NAME, "embedding_metric": info.metric, "dim": info.dim,
        "nlist": plan.nlist, "nprobe": nprobe, "count": total,
        "shards": [{"file": r.file, "count": r.count, "sha256": r.sha256, "bytes": r.bytes} for r in results],
        "id_map": [r.id_map for r in results],
        "model_version": info.model_version, "embeddings_files": info.files,
        "recall_at_10": recalls[nprobe], "recall_queries": len(queries.ids),
        "recall_by_nprobe": [{"nprobe": k, "recall_at_10": v} for k, v in recalls.items()],
        "min_recall_at_10": settings.min_recall_at_10, "train_size": plan.train_size,
        "tied_neighbour_share": tied_neighbour_share(results, queries),
        "build_s": round(time.time() - started, 3),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    storage.write_json(storage.join(version_dir, INDEX_MANIFEST_FILE), manifest)
    return manifest


def check_recall(manifest: dict, min_recall: float) -> None:
    if manifest["recall_at_10"] < min_recall:
        tried = ", ".join(f"nprobe {r['nprobe']}: {r['recall_at_10']:.3f}" for r in manifest["recall_by_nprobe"])
        raise RecallTooLow(f"recall@10 {manifest['recall_at_10']:.3f} is below index.min_recall_at_10 "
                           f"{min_recall} ({tried}); nothing was published. Raise index.nprobe or "
                           "index.nlist, turn on index.tune_nprobe, or choose another index.factory")


def check_neighbour_scores(manifest: dict, max_tied_share: Optional[float]) -> None:
    if max_tied_share is not None and manifest["tied_neighbour_share"] > max_tied_share:
        raise DegenerateScores(
            f"{manifest['tied_neighbour_share']:.0%} of {manifest['recall_queries']} queries have all top-{RECALL_K} "
            f"neighbour scores tied (above index.max_tied_neighbour_share {max_tied_share}): the embeddings are "
            "degenerate, e.g. a collapsed model that maps every poster to one vector; nothing was published. "
            "Check the model's eval_metrics.json (collapse measures) and retrain")


# --- Beam ---------------------------------------------------------------------------------------------------
class IdHistogram(beam.CombineFn):
    """Sums per-bundle id histograms: a fixed-size accumulator, whatever the catalog's size."""

    def create_accumulator(self):
        return np.zeros(1 << ID_RANGE_BITS, np.int64)

    def add_input(self, accumulator, histogram):
        return accumulator + histogram

    def merge_accumulators(self, accumulators):
        return sum(accumulators, self.create_accumulator())

    def extract_output(self, accumulator):
        return accumulator


class SmallestIds(beam.CombineFn):
    """Keeps the `size` rows with the smallest ids: a uniform sample, the same on every run.

    Its merge concatenates partials, so feed it only rows below the sample's id limit (`SampleSmallestIds`):
    then all partials together hold at most the sample and one id range's rows.
    """

    def __init__(self, size: int, dim: int):
        self.size, self.dim = size, dim

    def create_accumulator(self):
        return empty_batch(self.dim)

    def add_input(self, accumulator, batch):
        if len(accumulator.ids) == self.size:  # full: only rows below its largest id can get in
            batch = take_rows(batch, np.flatnonzero(batch.ids < accumulator.ids[-1]))
        return smallest_ids(concat_batches([accumulator, batch], self.dim), self.size)

    def merge_accumulators(self, accumulators):
        return smallest_ids(concat_batches(accumulators, self.dim), self.size)

    def extract_output(self, accumulator):
        return accumulator


class SampleSmallestIds(beam.PTransform):
    """Vector batches → one batch of the `size` rows with the smallest ids, in id order, in bounded memory: a
    first pass histograms the ids (read from `files`, title ids only), then each bundle passes on only the rows
    in id ranges up to the one where the histogram reaches `size`."""

    def __init__(self, files, size: int, dim: int):
        super().__init__()
        self._files, self._size, self._dim = files, size, dim

    def expand(self, batches):
        size = self._size
        limit = (self._files
                 | "ReadTitleIds" >> ReadAllFromParquetBatched(columns=["title_id"])
                 | "HistogramIds" >> beam.Map(lambda table: id_histogram(table.column("title_id").to_pylist()))
                 | "IdHistogram" >> beam.CombineGlobally(IdHistogram())
                 | "RangeLimit" >> beam.Map(sample_range_limit, size))
        return (batches
                | "BelowLimit" >> beam.Map(lambda batch, last: _counted_rows(rows_below_limit(batch, last)),
                                           beam.pvalue.AsSingleton(limit))
                | "Smallest" >> beam.CombineGlobally(SmallestIds(size, self._dim)))


def _counted_rows(batch: VectorBatch) -> VectorBatch:
    Metrics.counter("index", "sample_candidates").inc(len(batch.ids))
    return batch


class BuildShard(beam.DoFn):
    def __init__(self, dim: int, nprobes: list, version_dir: str, plan: vi.IndexPlan, settings: IndexConfig):
        self.dim, self.nprobes, self.version_dir = dim, nprobes, version_dir
        self.plan, self.settings = plan, settings
        self.vectors = Metrics.counter("index", "vectors_indexed")
        self.shards = Metrics.counter("index", "shards_written")

    def process(self, shard_batches, empty_index, queries):
        shard, batches = shard_batches
        result = build_shard(shard, concat_batches(batches, self.dim), empty_index, queries, self.nprobes,
                             self.version_dir, self.plan, self.settings)
        self.vectors.inc(result.count)
        self.shards.inc()
        yield result


class BuildShardedIndex(beam.PTransform):
    """Embedding files → shards, id map and manifest in `version_dir`; outputs the manifest."""

    def __init__(self, info: EmbeddingsInfo, plan: vi.IndexPlan, settings: IndexConfig, version_dir: str,
                 started: float):
        super().__init__()
        self.info, self.plan, self.settings, self.version_dir, self.started = (info, plan, settings, version_dir,
                                                                             started)

    def expand(self, files):
        info, plan, settings = self.info, self.plan, self.settings
        batches = (files
                   | "ReadEmbeddings" >> ReadAllFromParquetBatched(columns=["title_id", "embedding", "model_version"])
                   | "ToVectorBatches" >> beam.Map(to_vector_batch, info.dim, info.model_version))
        sample = (batches
                  | "SampleSmallestIds" >> SampleSmallestIds(files, plan.train_size + settings.recall_queries,
                                                             info.dim)
                  | "SplitQueriesAndTraining" >> beam.Map(split_sample, settings.recall_queries))
        queries = sample | "RecallQueries" >> beam.Map(lambda split: split[0])
        empty_index = (sample
                       | "TrainEmptyIndex" >> beam.Map(
                           lambda split: backends.train_empty(plan, info.dim, split[1].vectors, settings)))
        every_shard = (files.pipeline
                       | "EveryShard" >> beam.Create([(s, empty_batch(info.dim)) for s in range(plan.num_shards)]))
        nprobes = backends.search_candidates(plan, settings, info.dim)
        shards = ((batches | "AssignShards" >> beam.FlatMap(split_by_shard, plan.num_shards), every_shard)
                  | "WithEveryShard" >> beam.Flatten()
                  | "GroupByShard" >> beam.GroupByKey()
                  | "BuildShards" >> beam.ParDo(BuildShard(info.dim, nprobes, self.version_dir, plan, settings),
                                                beam.pvalue.AsSingleton(empty_index),
                                                beam.pvalue.AsSingleton(queries)))
        return (shards
                | "CollectShards" >> beam.combiners.ToList()
                | "WriteManifest" >> beam.Map(write_version, beam.pvalue.AsSingleton(queries), plan, info, settings,
                                              self.version_dir, self.started))


# --- entry points ---------------------------------------------------------------------------------------------
def build_and_publish(config: Config, embeddings_uri: str, out_uri: str, beam_args: Optional[list[str]] = None,
                      save_main_session: bool = True, test_pipeline=None, run_date: Optional[str] = None,
                      allow_older: bool = False, fence: Optional[versions.Fence] = None) -> dict:
    """Builds, verifies and publishes an index of `embeddings_uri` under `out_uri`; returns its manifest.

    `run_date` (the nightly's date) is recorded in `CURRENT`; an index for an earlier date than the live one's
    raises `versions.OlderRunDate` (before anything is built, and again at the swap) unless `allow_older`.
    `fence` (the nightly lock's `Heartbeat.fenced`): the swap happens only while the run holds its lock.
    """
    settings = config.index
    started = time.time()
    live = versions.read_current(out_uri)  # an unreadable CURRENT is refused here, before the build
    if not allow_older:
        versions.check_run_date(out_uri, live, run_date)
    info = describe_embeddings(embeddings_uri)
    if info.rows == 0:
        raise vi.IndexBuildError(f"{embeddings_uri} holds no embeddings: nothing to index")
    if info.metric != EMBEDDING_METRIC:
        raise vi.IndexBuildError(f"{embeddings_uri}: metric {info.metric!r}; the index serves "
                                 f"{EMBEDDING_METRIC!r} embeddings (unit vectors, inner product)")
    plan = backends.plan_index(info.rows, info.dim, settings)
    version = versions.new_version()
    version_dir = versions.version_uri(out_uri, version)
    log.info("indexing %d vectors of %s as %s in %d shards → %s", info.rows, embeddings_uri, plan.factory,
             plan.num_shards, version_dir)
    try:
        pipeline = make_pipeline(config, beam_args or [], save_main_session, test_pipeline)
        with pipeline as p:
            _ = (p | "EmbeddingFiles" >> beam.Create(info.files)
                 | "BuildShardedIndex" >> BuildShardedIndex(info, plan, settings, version_dir, started))
    except BaseException:
        _discard(out_uri, version)
        raise
    return publish_version(config, out_uri, version, run_date, allow_older, fence)


def publish_version(config: Config, out_uri: str, version: str, run_date: Optional[str] = None,
                    allow_older: bool = False, fence: Optional[versions.Fence] = None) -> dict:
    """The gate and the swap after a build (here, or a Dataflow job's: `posters index publish`): checks the
    version directory `version` under `out_uri` (its manifest, the recall gate) and makes it live through `CURRENT`
    (fenced by `fence`); any failure deletes the version unless `CURRENT` names it. Returns its manifest."""
    settings = config.index
    manifest_uri = storage.join(versions.version_uri(out_uri, version), INDEX_MANIFEST_FILE)
    try:
        if not storage.exists(manifest_uri):
            raise FileNotFoundError(f"{manifest_uri} does not exist: the index build did not finish")
        manifest = storage.read_json(manifest_uri)
        check_neighbour_scores(manifest, settings.max_tied_neighbour_share)  # first: degenerate scores are the cause
        check_recall(manifest, settings.min_recall_at_10)
        pointer = versions.publish(out_uri, version, keep=settings.keep_versions, required_file=INDEX_MANIFEST_FILE,
                                   run_date=run_date, allow_older=allow_older, fence=fence)
    except BaseException:
        _discard(out_uri, version)
        raise
    manifest["published"] = pointer.to_json()
    return manifest


def _discard(out_uri: str, version: str) -> None:
    try:  # keeps the version if CURRENT names it: a publish can land although it reported an error
        versions.discard_version(out_uri, version)
    except Exception as err:  # noqa: BLE001 — cleanup must not hide why the build failed
        log.warning("could not clean up unpublished version %s: %s", versions.version_uri(out_uri, version), err)


def summary(manifest: dict, out_uri: str) -> str:
    nprobe = f", {manifest.get('search_parameter') or 'nprobe'} {manifest['nprobe']}" if manifest["nprobe"] else ""
    return (f"index {manifest['version']}: {manifest['count']:,} vectors in {len(manifest['shards'])} shards "
            f"({manifest['factory']}{nprobe}), recall@10 {manifest['recall_at_10']:.3f} on "
            f"{manifest['recall_queries']} queries, built in {manifest['build_s']:.1f} s; "
            f"live at {storage.join(out_uri, versions.POINTER_FILE)}")


def _parse(argv: list[str]):
    parser = command_parser("index", "build, verify and publish a sharded FAISS index of embeddings "
                                     "(`posters index rollback --out URI` goes back one version)")
    parser.add_argument("--embeddings", required=True, help="embeddings directory (or one .parquet file), local or gs://")
    parser.add_argument("--out", required=True, help="index root: version directories and the CURRENT pointer")
    return parse_command(parser, argv)


def run(argv: list[str] | None = None, save_main_session: bool = True, test_pipeline=None) -> dict:
    """Runs `posters index` for these flags: builds, verifies and publishes; returns the published manifest."""
    args, config, beam_args = _parse(sys.argv[1:] if argv is None else argv)
    storage.check_output_location(args.out, {"--embeddings": args.embeddings})
    manifest = build_and_publish(config, args.embeddings, args.out, beam_args, save_main_session, test_pipeline)
    manifest["out"] = args.out
    return manifest


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if argv and argv[0] == "rollback":
            return rollback_main(argv[1:])
        manifest = run(argv)
    except (ValueError, FileNotFoundError, versions.PublishConflict) as err:  # ours to explain, not to trace
        print(f"posters index: {err}", file=sys.stderr)
        return 1
    print(summary(manifest, manifest["out"]))
    return 0


def rollback_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="posters index rollback",
                                     description="make the previously published index version live again")
    parser.add_argument("--out", required=True, help="the index root given to `posters index --out`")
    args = parser.parse_args(argv)
    pointer = versions.rollback(args.out)
    print(f"rolled back: {pointer.version} is live at {args.out} (retired {pointer.retired[0]})")
    return 0
