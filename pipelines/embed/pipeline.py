"""`posters embed`: a catalog through the exported model into Parquet embeddings, incremental and idempotent.

    ReadCatalog → ValidateCatalogRows → SkipUnchangedPosters (CoGroupByKey by title_id with ReadPreviousEmbeddings)
        SkipUnchangedPosters ─ same poster object metadata ─────────────────────────────┐ carried, unread
                             └ to read → ReadAndValidatePosters → ClassifyPosters       │
                                          └ http 304 Not Modified → CarryNotModified ───┤ carried, not downloaded
        ClassifyPosters ─ new, changed → EmbedPosters (RunInference) ───────────────────┤
                        └ unchanged (same bytes) ───────────────────────────────────────┴→ WriteEmbeddings
    (without --previous every title is new: no join)
    rejects (catalog rows, posters, inference) → WriteRejects;  every branch → CountStats

Each title's poster object metadata (`contracts.POSTER_OBJECT_TYPE`: size, modification time, on GCS generation and
checksums; looked up without reading the file) is written beside its embedding. A title is carried over from
`--previous` without reading its poster when that metadata and the model version are unchanged, and without running
the model when the bytes read have the previous sha256; titles gone from the catalog are dropped. An http(s)
poster has no metadata to look up without a request: its GET is conditional on the ETag / Last-Modified recorded
last time, and a 304 carries the title over without downloading the poster (counted: `not_modified`). The previous run
meets the catalog in a CoGroupByKey, never as a side input (which every worker process would hold whole, and Beam
rebuilds per bundle). Poster bytes read are counted (`poster_bytes_read`, a Beam counter and a key of `_stats.json`).
Catalog rows and posters are checked one at a time with the preprocess pipeline's own code (same reject reasons)
before they reach a RunInference batch, except the decode: each poster is decoded once, by the model handler, a
batch in one call, at the model's input size (`pipelines.common.pixels.poster_pixels`: a JPEG at the smallest DCT
scale that covers it), and those uint8 pixels go to the export's pixel signature; a poster that does not decode
gets the validator's own reject (truncated, undecodable) and costs no batch-mate. An export without the pixel
signature (made before it existed) is validated with a decode and fed the bytes, which its graph decodes again.
Everything is written to a staging directory; the launcher checks the accounting (embedded + carried + rejected =
read) and the error budget, writes the manifest and publishes.
"""
from __future__ import annotations

import sys
import time

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from pipelines.common import storage
from pipelines.common.accounting import (
    COUNTS_FILE,
    CountStats,
    ErrorBudgetExceeded,
    budget_figures,
    check_accounting,
    manifest_line_stats,
    reject_stats,
    top_reasons,
    write_stats_and_check_budget,
)
from pipelines.common.catalog import CatalogError, CatalogRow, ReadCatalog, poster_roots
from pipelines.common.catalog_rows import ValidateCatalogRows
from pipelines.common.command_line import command_parser, make_pipeline, parse_command
from pipelines.common.exported_model import ExportError, load_exported_model, read_model_meta, takes_pixels
from pipelines.common.posters import (
    POSTER_BYTES_READ,
    PREVIOUS_OBJECT,
    ReadAndValidatePosters,
    WriteRejects,
    poster_object,
    reject_record,
    same_poster_object,
)
from pipelines.config import Config, ConfigError
from pipelines.contracts import EMBEDDING_METRIC, POSTER_OBJECT_COLUMN, REJECTS_DIR, RejectReason, embeddings_schema
from pipelines.embed.model_handler import InferenceFailure, PosterModelHandler
from pipelines.embed.reader import EmbeddingsError, describe_embeddings, has_column
from pipelines.embed.writer import WriteEmbeddings, parquet_files, publish_embeddings, write_manifest

METRICS_NAMESPACE = "embed"
NEW, CHANGED, UNCHANGED = "new", "changed", "unchanged"
STATUSES = (NEW, CHANGED, UNCHANGED)
# embed's own counts besides read / rejected / rejected_by_reason, with their empty values.
NOT_MODIFIED = "not_modified"  # unchanged http posters the server answered 304 for (part of `unchanged`)
STATS_SECTIONS = {NEW: 0, CHANGED: 0, UNCHANGED: 0, "removed": 0, NOT_MODIFIED: 0}
FINGERPRINT_COLUMNS = ["title_id", "image_sha256", "model_version"]


# --- plain functions ---------------------------------------------------------------------------------------

def poster_status(image_sha256: str, model_version: str, previous: dict | None) -> str:
    """`new` (no previous embedding), `unchanged` (same poster bytes and model version) or `changed`;
    `previous` is the title's previous row (at least `image_sha256` and `model_version`)."""
    if previous is None:
        return NEW
    same = (previous["image_sha256"], previous["model_version"]) == (image_sha256, model_version)
    return UNCHANGED if same else CHANGED


def can_skip_read(poster_object: dict | None, model_version: str, previous: dict | None) -> bool:
    """Whether a title's previous row can be carried over without reading its poster: its vector was read (same
    model version) and the poster's object metadata (uri, size, time, and on GCS generation and checksums) is
    the same as when it was embedded."""
    return (can_reuse(model_version, previous)
            and same_poster_object(previous.get(POSTER_OBJECT_COLUMN), poster_object))


def can_reuse(model_version: str, previous: dict | None) -> bool:
    """Whether a title's previous vector can be carried over when its poster is unchanged (same model version)."""
    return previous is not None and "embedding" in previous and previous["model_version"] == model_version


def summary_line(stats: dict) -> str:
    reasons = top_reasons(stats) or "none"
    return (f"embed: {stats['read']} read → {stats['rows']} embeddings ({stats[NEW]} new, {stats[CHANGED]} changed, "
            f"{stats[UNCHANGED]} unchanged carried over{_by_304(stats)}), {stats['removed']} removed, "
            f"{stats.get(POSTER_BYTES_READ, 0):,} poster bytes read, {stats['rejected']} rejected "
            f"({reasons}); model {stats['model_version']}; {stats['seconds']} s → {stats['out']}")


def _by_304(stats: dict) -> str:
    return f", {stats[NOT_MODIFIED]} of them by HTTP 304" if stats.get(NOT_MODIFIED) else ""


def _title_record(row: CatalogRow, image_sha256: str, poster_object: dict | None, status: str) -> dict:
    return {"title_id": row.title_id, "poster_uri": row.poster_uri, "image_sha256": image_sha256,
            "genres": list(row.genres), POSTER_OBJECT_COLUMN: poster_object, "status": status, "lines": row.lines}


def _embedding_row(record: dict, vector, model_version: str) -> dict:
    """A title record plus its vector → a row of the embeddings schema (`status` and `lines` ride along for the
    counts)."""
    return {"title_id": record["title_id"], "embedding": np.asarray(vector, np.float32),
            "image_sha256": record["image_sha256"], "model_version": model_version, "genres": record["genres"],
            POSTER_OBJECT_COLUMN: record[POSTER_OBJECT_COLUMN], "status": record["status"], "lines": record["lines"]}


# --- pipeline parts ----------------------------------------------------------------------------------------

class ReadPreviousEmbeddings(beam.PTransform):
    """A previous embeddings location (manifest + `_SUCCESS`) → its rows as dicts.

    When its model version differs from the current one no vector can be reused, so only ids and
    fingerprints are read; files written before `poster_object` existed are read without it.
    """

    def __init__(self, previous_uri: str | None, model_version: str):
        super().__init__()
        self._files, self._columns = [], None
        if previous_uri:
            info = describe_embeddings(previous_uri)
            self._files = info.files
            if info.model_version != model_version:
                self._columns = FINGERPRINT_COLUMNS
            elif not has_column(info.files[0], POSTER_OBJECT_COLUMN):
                self._columns = [field.name for field in embeddings_schema(info.dim, info.model_version)]

    def expand(self, pbegin):
        if not self._files:
            return pbegin | "NoPrevious" >> beam.Create([])
        return (pbegin
                | "PreviousFiles" >> beam.Create(self._files)
                | "ReadPreviousParquet" >> beam.io.ReadAllFromParquet(columns=self._columns))


def _look_up(row: CatalogRow):
    """A validated row → (title_id, (row, its poster's object metadata)), no poster byte read."""
    return row.title_id, (row, poster_object(row.poster_uri))


def _against_previous(item, model_version: str):
    """One title's catalog rows, validated row and previous row → on `read` (row, previous) for a poster that must
    be read, on `carried` the previous row carried over unread, on `removed` a title gone from the catalog."""
    title_id, groups = item
    listed, titles, previous = list(groups["listed"]), list(groups["titles"]), list(groups["previous"])
    before = previous[0] if previous else None
    row, found = titles[0] if titles else (None, None)
    if not titles:  # gone from the catalog (removed), or its rows were rejected (counted there)
        if before is not None and not listed:
            Metrics.counter(METRICS_NAMESPACE, "titles_removed").inc()
            yield beam.pvalue.TaggedOutput("removed", title_id)
    elif can_skip_read(found, model_version, before):
        Metrics.counter(METRICS_NAMESPACE, f"titles_{UNCHANGED}").inc()
        record = _title_record(row, before["image_sha256"], found, UNCHANGED)
        yield beam.pvalue.TaggedOutput("carried", _embedding_row(record, before["embedding"], model_version))
    else:
        yield row, _read_context(found, before, model_version)


def _read_context(found: dict | None, before: dict | None, model_version: str) -> dict:
    """What rides along with a poster to read: its looked-up object, its previous row, and the object recorded
    when it was last read when that row could be carried over (an http GET is then conditional on it)."""
    reusable = can_reuse(model_version, before)
    return {POSTER_OBJECT_COLUMN: found, "previous": before,
            PREVIOUS_OBJECT: before.get(POSTER_OBJECT_COLUMN) if reusable else None}


class SkipUnchangedPosters(beam.PTransform):
    """(previous rows, catalog rows, validated rows) → (rows whose poster must be read, as (row, context),
    carried embedding rows, removed title ids), joined by title_id with CoGroupByKey: the previous run is never
    a side input, so no process holds it whole."""

    def expand(self, inputs):
        previous, catalog, titles = inputs
        grouped = ({"previous": previous | "KeyPrevious" >> beam.Map(lambda row: (row["title_id"], row)),
                    "listed": catalog | "KeyCatalog" >> beam.FlatMap(
                        lambda row: [(row.title_id, None)] if row.title_id is not None else []),
                    "titles": titles | "LookUpPosterObjects" >> beam.Map(_look_up)}
                   | "JoinOnTitleId" >> beam.CoGroupByKey())
        sorted_out = grouped | "AgainstPrevious" >> beam.FlatMap(
            _against_previous, self._model_version).with_outputs("carried", "removed", main="read")
        return sorted_out.read, sorted_out.carried, sorted_out.removed

    def __init__(self, model_version: str):
        super().__init__()
        self._model_version = model_version


class ClassifyPoster(beam.DoFn):
    """(row, poster, context) of a poster read → (record, image bytes) on `embed` for new and changed titles, a
    carried embedding row on `unchanged` (same bytes as the previous run's: the file was rewritten or touched)."""

    def __init__(self, model_version: str):
        self._model_version = model_version
        self._counters = {status: Metrics.counter(METRICS_NAMESPACE, f"titles_{status}") for status in STATUSES}

    def process(self, item):
        row, poster, context, fetched_object = item
        previous = context["previous"]
        status = poster_status(poster.sha256, self._model_version, previous)
        self._counters[status].inc()
        record = _title_record(row, poster.sha256, context[POSTER_OBJECT_COLUMN] or fetched_object, status)
        if status == UNCHANGED:
            yield beam.pvalue.TaggedOutput(UNCHANGED, _embedding_row(record, previous["embedding"],
                                                                     previous["model_version"]))
        else:
            yield record, poster.image_bytes


def _carry_not_modified(row: CatalogRow, fetched, context: dict):
    """An http poster the server says is unchanged (304) → the previous row carried over, with the validators the
    server sent this time."""
    previous = context["previous"]
    Metrics.counter(METRICS_NAMESPACE, f"titles_{UNCHANGED}").inc()
    record = _title_record(row, previous["image_sha256"], fetched.poster_object, UNCHANGED)
    return _embedding_row(record, previous["embedding"], previous["model_version"])


def _inference_rejects(failure):
    batch, (error_type, error, _traceback) = failure
    for record, _image in batch:
        yield reject_record(record["title_id"], record["poster_uri"], RejectReason.INFERENCE_FAILED,
                            f"the model failed on its batch of {len(batch)}: {error[:500]}", record["lines"])


def _row_or_reject(record: dict, result):
    """A RunInference result → an embedding row, or on `rejects` the title whose poster did not decode (the
    validator's reason) or that the model failed on by itself."""
    if isinstance(result.inference, InferenceFailure) and result.inference.reason:
        yield beam.pvalue.TaggedOutput("rejects", reject_record(
            record["title_id"], record["poster_uri"], result.inference.reason, result.inference.error,
            record["lines"]))
    elif isinstance(result.inference, InferenceFailure):
        yield beam.pvalue.TaggedOutput("rejects", reject_record(
            record["title_id"], record["poster_uri"], RejectReason.INFERENCE_FAILED,
            f"the model failed on this poster alone (its batch-mates were embedded): {result.inference.error}",
            record["lines"]))
    else:
        yield _embedding_row(record, result.inference, result.model_id)


class EmbedPosters(beam.PTransform):
    """(record, encoded poster) → (embedding rows, reject records) through RunInference and the model handler.

    A poster the model fails on (the handler retries a failing batch one poster at a time) goes to rejects as
    `inference_failed`, naming its title and the error; a batch that fails as a whole outside the handler (after
    out-of-memory backoff) goes there title by title.
    """

    def __init__(self, handler: PosterModelHandler, accelerator: str | None = None):
        super().__init__()
        self._handler, self._accelerator = handler, accelerator

    def expand(self, posters):
        inference = RunInference(KeyedModelHandler(self._handler)).with_exception_handling()
        if self._accelerator:  # this step alone asks for the GPU (Dataflow right fitting): reads stay on CPUs
            inference = inference.with_resource_hints(accelerator=self._accelerator)
        results, failures = posters | "RunInference" >> inference
        rows = results | "ToRows" >> beam.FlatMapTuple(_row_or_reject).with_outputs("rejects", main="rows")
        batch_rejects = failures.failed_inferences | "FailedBatches" >> beam.FlatMap(_inference_rejects)
        rejects = (rows.rejects, batch_rejects) | "InferenceRejects" >> beam.Flatten()
        return rows.rows, rejects


def _row_stats(row: dict):
    return [((row["status"], ""), 1), (("lines", "accepted"), row["lines"])]


def _not_modified_stats(row: dict):
    return [((NOT_MODIFIED, ""), 1)]


def _stat_pairs(name: str):
    return lambda _: [((name, ""), 1)]


def build_pipeline(pipeline: beam.Pipeline, catalog_uri: str, model_uri: str, out_dir: str, config: Config,
                   previous_uri: str | None = None) -> None:
    """Wires the embed pipeline into `pipeline`, every output under `out_dir`."""
    meta = read_model_meta(model_uri)
    model_version, dim = meta["model_version"], int(meta["dim"])
    pixel_size = int(meta["input_size"]) if takes_pixels(meta) else None  # decoded once, by the model handler
    catalog, manifest_lines = pipeline | "ReadCatalog" >> ReadCatalog(catalog_uri, config.catalog)
    titles, title_rejects = catalog | "ValidateCatalogRows" >> ValidateCatalogRows(
        config.preprocess.duplicate_title_policy)
    if previous_uri:
        previous = pipeline | "ReadPreviousEmbeddings" >> ReadPreviousEmbeddings(previous_uri, model_version)
        to_read, carried_unread, removed = (previous, catalog, titles) | "SkipUnchangedPosters" >> \
            SkipUnchangedPosters(model_version)
    else:
        # A first run: every title is new and none is removed, so there is no join of the whole catalog by
        # title_id (a shuffle of every row) that could only produce nothing.
        to_read = titles | "LookUpPosterObjects" >> beam.Map(
            lambda row: (row, _read_context(poster_object(row.poster_uri), None, model_version)))
        carried_unread = pipeline | "NoneCarried" >> beam.Create([])
        removed = pipeline | "NoneRemoved" >> beam.Create([])
    posters, poster_rejects, not_modified = to_read | "ReadAndValidatePosters" >> ReadAndValidatePosters(
        config.image, config.preprocess.read_retries, config.http, with_context=True, conditional=True,
        decode=pixel_size is None, roots=poster_roots(catalog_uri, config.catalog))
    carried_not_modified = not_modified | "CarryNotModified" >> beam.MapTuple(_carry_not_modified)
    classified = posters | "ClassifyPosters" >> beam.ParDo(
        ClassifyPoster(model_version)).with_outputs(UNCHANGED, main="embed")

    embedded, inference_rejects = classified.embed | "EmbedPosters" >> EmbedPosters(
        PosterModelHandler.from_config(model_uri, config.embed, pixel_size=pixel_size), config.embed.accelerator)
    rows = (embedded, classified[UNCHANGED], carried_unread, carried_not_modified) | "AllRows" >> beam.Flatten()
    _ = rows | "WriteEmbeddings" >> WriteEmbeddings(out_dir, dim, model_version, config.embed.max_rows_per_file)

    rejects = (title_rejects, poster_rejects, inference_rejects) | "AllRejects" >> beam.Flatten()
    _ = rejects | "WriteRejects" >> WriteRejects(storage.join(out_dir, REJECTS_DIR))
    stat_pairs = (
        # Pairs made per title are summed where they are made (Beam lifts the combine into the producing stage), so
        # a few totals per bundle, not pairs per title, reach the Flatten (which the runner materialises).
        catalog | "ReadStats" >> beam.FlatMap(_stat_pairs("read")) | "SumReadStats" >> beam.CombinePerKey(sum),
        manifest_lines | "LineStats" >> beam.FlatMap(manifest_line_stats),
        rows | "RowStats" >> beam.FlatMap(_row_stats) | "SumRowStats" >> beam.CombinePerKey(sum),
        removed | "RemovedStats" >> beam.FlatMap(_stat_pairs("removed")),
        carried_not_modified | "NotModifiedStats" >> beam.FlatMap(_not_modified_stats),
        rejects | "RejectStats" >> beam.FlatMap(reject_stats),
    ) | "AllStats" >> beam.Flatten()
    _ = stat_pairs | "CountStats" >> CountStats(storage.join(out_dir, COUNTS_FILE), STATS_SECTIONS)


# --- launcher ----------------------------------------------------------------------------------------------

def _parse(argv: list[str]):
    parser = command_parser("embed", __doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, help="catalog manifest (CSV, JSONL or Parquet; local or gs://)")
    parser.add_argument("--model", required=True, help="exported model directory (SavedModel + model_meta.json)")
    parser.add_argument("--out", required=True, help="embeddings directory (local or gs://), replaced when complete")
    parser.add_argument("--previous", help="a previous embeddings directory: unchanged titles are carried over")
    return parse_command(parser, argv)


def run(argv: list[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs the pipeline for `posters embed` flags; returns the published stats (also in the manifest).

    Raises `ErrorBudgetExceeded` (nothing published), `CatalogError`, `EmbeddingsError`, `ExportError` or
    `ConfigError` for what the user must fix.
    """
    args, config, beam_args = _parse(sys.argv[1:] if argv is None else argv)
    # --out may be --previous itself: the previous rows are read whole before the new ones are published.
    storage.check_output_location(args.out, {"--catalog": args.catalog, "--model": args.model,
                                             "--previous": args.previous,
                                             "catalog.poster_root": config.catalog.poster_root},
                                  may_be=("--previous",))
    if not storage.exists(args.catalog):
        raise CatalogError(f"catalog manifest not found: {args.catalog}")
    meta = read_model_meta(args.model)
    load_exported_model(args.model)  # refuses weights the meta does not describe, before any worker starts
    if meta.get("metric", EMBEDDING_METRIC) != EMBEDDING_METRIC:
        raise ConfigError(f"{args.model}: the model's metric is {meta['metric']!r}; embeddings are {EMBEDDING_METRIC}")
    staging = storage.staging_uri(args.out)
    started = time.time()
    print(f"embed: {args.catalog} with model {meta['model_version']} → {args.out} (staging {staging})", flush=True)
    try:
        pipeline = make_pipeline(config, beam_args, save_main_session, test_pipeline)
        build_pipeline(pipeline, args.catalog, args.model, staging, config, args.previous)
        result = pipeline.run()
        result.wait_until_finish()
        stats = _final_stats(staging, args, config, meta, time.time() - started)
        stats[POSTER_BYTES_READ] = counter_total(result, POSTER_BYTES_READ)
    except BaseException:
        storage.delete_tree(staging)
        raise
    publish_staged(stats, staging, args.out, meta)
    return stats


def publish_staged(stats: dict, staging: str, out: str, meta: dict) -> None:
    """After the job (here, or a Dataflow job's: `posters embed publish`): checks the error budget
    (`ErrorBudgetExceeded`: nothing published, the rejects stay in `staging`), then writes the manifest and
    publishes `staging` to `out`."""
    storage.delete_tree(storage.join(staging, COUNTS_FILE))
    write_stats_and_check_budget(stats, staging, out, "embed.max_reject_fraction", unit="titles")
    counts = {key: stats[key] for key in ("read", NEW, CHANGED, UNCHANGED, "removed", "rejected", "embedded")}
    manifest = write_manifest(staging, parquet_files(staging), int(meta["dim"]), meta["model_version"], counts)
    publish_embeddings(staging, out, manifest)


def _final_stats(staging: str, args, config: Config, meta: dict, seconds: float) -> dict:
    stats = storage.read_json(storage.join(staging, COUNTS_FILE))
    stats.update(budget_figures(stats, config.preprocess.duplicate_title_policy, config.embed.max_reject_fraction),
                 embedded=stats[NEW] + stats[CHANGED], rows=sum(rows for _, rows in parquet_files(staging)),
                 model_version=meta["model_version"], catalog=args.catalog, model=args.model,
                 previous=args.previous, out=args.out, seconds=round(seconds, 1))
    check_accounting(stats, STATUSES)
    if stats["rows"] != stats[NEW] + stats[CHANGED] + stats[UNCHANGED]:
        raise RuntimeError(f"accounting broken: {stats['rows']} rows written, {stats['embedded']} embedded + "
                           f"{stats[UNCHANGED]} carried over")
    return stats


def counter_total(result, name: str) -> int:
    """The committed total of the Beam counter `name` over every step (0 when the runner reports none)."""
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return int(sum(counter.committed or 0 for counter in counters))


def main(argv: list[str]) -> int:
    try:
        stats = run(argv)
    except (ConfigError, CatalogError, EmbeddingsError, ExportError, ErrorBudgetExceeded,
            storage.OutputLocationError) as err:
        print(f"posters embed: {err}", file=sys.stderr)
        return 1
    print(summary_line(stats), flush=True)
    return 0
