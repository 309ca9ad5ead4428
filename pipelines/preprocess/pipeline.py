"""`posters preprocess`: a catalog and its posters → tensorflow-transform training data, every row accounted for.

    ReadCatalog → ValidateCatalogRows → ReadAndValidatePosters ─ genres → AnalyzeGenres (TFT) → WriteTransformFn
                          └────────── rejects ──────────┘        │                                       │ (written)
                                                                 └──────────── ToExamples ←──────────────┘ → WriteSplits
    rejects → WriteRejects (`_rejects/`);  every branch → CountStats → `_stats.json`
    posters → GroupDuplicatePosters → duplicate_groups/ (Parquet); examples join their group → WriteSplits

The split is by group (`pipelines.common.splits`): titles with byte-identical or near-identical posters are one
group (`pipelines.preprocess.duplicates`) and land on the same side; the examples join their title's group id
(a CoGroupByKey by title_id; the TFRecord write shuffles them anyway).

tensorflow-transform analyses only what it has to, title_id and genres (the genre vocabulary); no TFT batch holds
a poster. `ToExamples` then makes each example where its poster already is, in batches: labels and primary genre
from the written transform_fn (TFT's own graph, on title_id and genres), the image decoded and resized by the
serving graph's own function (`PosterPng`), so no poster or pixel is shuffled or joined. The launcher adds the
`image` feature to the transformed metadata TFT wrote, so the output's feature spec describes every feature.

Everything is written under a staging directory beside `--out`; the launcher then checks the accounting
(accepted + rejected = read) and the error budget, writes the final `_stats.json` and publishes the directory.
When too much is rejected nothing is published, and the staging directory is kept so the rejects can be read.

tensorflow-transform writes its analysis and the `transform_fn` with TensorFlow's own file I/O, into a work
directory (under `--temp_location` when given, as on Dataflow; else a local temporary directory); the launcher
copies the finished `transform_fn/` and `transformed_metadata/` into staging through Beam's FileSystems, so the
rest of the output goes wherever Beam can write.
"""
from __future__ import annotations

import sys
import tempfile
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

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
from pipelines.common.posters import ReadAndValidatePosters, ValidPoster, WriteRejects
from pipelines.common.splits import is_eval
from pipelines.config import Config, ConfigError
from pipelines.contracts import (
    DUPLICATE_GROUPS_DIR,
    DUPLICATE_GROUPS_SCHEMA,
    FEATURE_IMAGE,
    FEATURE_LABELS,
    FEATURE_PRIMARY_GENRE,
    FEATURE_TITLE_ID,
    GENRE_VOCABULARY_NAME,
    PREPROCESS_EVAL_PREFIX,
    PREPROCESS_TRAIN_PREFIX,
    RAW_FEATURE_GENRES,
    REJECTS_DIR,
    TRANSFORM_FN_DIR,
    TRANSFORMED_METADATA_DIR,
)
from pipelines.preprocess.duplicates import GroupDuplicatePosters

TFRECORD_SUFFIX = ".tfrecord.gz"
TRANSFORM_OUTPUT = "transform_output"  # under the work directory: what WriteTransformFn writes
EXAMPLE_BATCH = 256  # posters per call of the transform_fn (labels) in ToExamples; their PNGs are made one by one
# preprocess's own counts besides read / rejected / rejected_by_reason, with their empty values.
STATS_SECTIONS = {"accepted": 0, "genre_counts": {}, "converted_to_rgb": {}, "duplicate_images": 0,
                  "train_examples": 0, "eval_examples": 0, "titles_without_vocabulary_genre": 0,
                  "duplicate_groups": 0, "titles_in_duplicate_groups": 0, "unsettled_duplicate_links": 0}
SPLIT_KEY = "split_key"  # beside an example's features on its way to WriteSplits: its group id (not written)


# --- plain functions ---------------------------------------------------------------------------------------

# --- pipeline parts ----------------------------------------------------------------------------------------

class WriteSplits(beam.PTransform):
    """Examples (dicts of the transformed features) → gzip TFRecord shards under `train/` and `eval/`; returns
    split stat pairs."""

    def __init__(self, out_dir: str, eval_fraction: float, num_shards: int):
        super().__init__()
        self._out_dir = out_dir
        self._eval_fraction = eval_fraction
        self._num_shards = num_shards

    def expand(self, examples):
        train, evaluation = examples | "Split" >> beam.Partition(_split_index, 2, self._eval_fraction)
        for name, prefix, split in (("Train", PREPROCESS_TRAIN_PREFIX, train),
                                    ("Eval", PREPROCESS_EVAL_PREFIX, evaluation)):
            _ = (split
                 | f"Encode{name}" >> beam.Map(encode_example)
                 | f"Write{name}" >> beam.io.WriteToTFRecord(
                     storage.join(self._out_dir, prefix), file_name_suffix=TFRECORD_SUFFIX,
                     compression_type=beam.io.filesystem.CompressionTypes.GZIP, num_shards=self._num_shards))
        return ((train | "TrainStats" >> beam.FlatMap(_example_stats, "train_examples")),
                (evaluation | "EvalStats" >> beam.FlatMap(_example_stats, "eval_examples"))) \
            | "SplitStats" >> beam.Flatten()


def encode_example(example: dict) -> bytes:
    """An example (title_id, image PNG, labels, primary_genre) → a serialised tf.train.Example, as the output's
    transformed feature spec parses it."""
    import tensorflow as tf

    feature = {
        FEATURE_TITLE_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[example[FEATURE_TITLE_ID]])),
        FEATURE_IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[example[FEATURE_IMAGE]])),
        FEATURE_LABELS: tf.train.Feature(float_list=tf.train.FloatList(value=list(example[FEATURE_LABELS]))),
        FEATURE_PRIMARY_GENRE: tf.train.Feature(int64_list=tf.train.Int64List(
            value=[int(example[FEATURE_PRIMARY_GENRE])])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class _ToExamplesDoFn(beam.DoFn):
    """A batch of (row, poster) → examples: title_id, labels and primary_genre from the transform_fn TFT wrote to
    `transform_dir` (its own graph, on title_id and genres), and the image as a `PosterPng` of the poster.

    The side input only orders this step after WriteTransformFn; the transform is loaded once per process.
    """

    def __init__(self, size: int, transform_dir: str):
        self._size = size
        self._transform_dir = transform_dir
        self._png = self._layer = None

    def process(self, batch, _transform_fn_written):
        import tensorflow as tf

        if self._layer is None:
            import tensorflow_transform as tft

            from pipelines.preprocess.transform import PosterPng

            self._png = PosterPng(self._size)
            self._layer = tft.TFTransformOutput(self._transform_dir).transform_features_layer()
        raw = {FEATURE_TITLE_ID: tf.constant([row.title_id for row, _ in batch]),
               RAW_FEATURE_GENRES: tf.ragged.constant([list(row.genres) for row, _ in batch],
                                                      dtype=tf.string, ragged_rank=1).to_sparse()}
        transformed = self._layer(raw)
        labels, primary = transformed[FEATURE_LABELS].numpy(), transformed[FEATURE_PRIMARY_GENRE].numpy()
        for i, (row, poster) in enumerate(batch):
            yield {FEATURE_TITLE_ID: row.title_id.encode("utf-8"), FEATURE_IMAGE: self._png(poster.image_bytes),
                   FEATURE_LABELS: labels[i], FEATURE_PRIMARY_GENRE: int(primary[i])}


def build_pipeline(pipeline: beam.Pipeline, catalog_uri: str, out_dir: str, work_dir: str, config: Config) -> None:
    """Wires the preprocess pipeline into `pipeline`: data, rejects and counts under `out_dir`; tensorflow-transform's
    temporary files and its output (`transform_fn/`, `transformed_metadata/`) under `work_dir`."""
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    from pipelines.preprocess.transform import make_preprocessing_fn, raw_feature_spec

    catalog, manifest_lines = pipeline | "ReadCatalog" >> ReadCatalog(catalog_uri, config.catalog)
    rows, catalog_rejects = catalog | "ValidateCatalogRows" >> ValidateCatalogRows(
        config.preprocess.duplicate_title_policy)
    posters, poster_rejects = rows | "ReadAndValidatePosters" >> ReadAndValidatePosters(
        config.image, config.preprocess.read_retries, config.http, roots=poster_roots(catalog_uri, config.catalog))
    rejects = (catalog_rejects, poster_rejects) | "AllRejects" >> beam.Flatten()
    _ = rejects | "WriteRejects" >> WriteRejects(storage.join(out_dir, REJECTS_DIR))

    raw_metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_feature_spec()))
    transform_dir = storage.join(work_dir, TRANSFORM_OUTPUT)
    with tft_beam.Context(temp_dir=storage.join(work_dir, "tmp")):
        raw = posters | "ToRawExamples" >> beam.MapTuple(_raw_example)
        transform_fn = (raw, raw_metadata) | "AnalyzeGenres" >> tft_beam.AnalyzeDataset(make_preprocessing_fn(config))
        written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(transform_dir)
    examples = (posters
                | "BatchPosters" >> beam.BatchElements(min_batch_size=16, max_batch_size=EXAMPLE_BATCH)
                | "ToExamples" >> beam.ParDo(_ToExamplesDoFn(config.model.input_size, transform_dir),
                                             beam.pvalue.AsSingleton(written)))
    labels, groups, duplicate_stats = posters | "GroupDuplicatePosters" >> GroupDuplicatePosters(config.preprocess)
    _ = groups | "WriteDuplicateGroups" >> beam.io.WriteToParquet(
        storage.join(out_dir, DUPLICATE_GROUPS_DIR, "part"), DUPLICATE_GROUPS_SCHEMA, file_name_suffix=".parquet")
    examples = ({"example": examples | "ExampleByTitle" >> beam.Map(lambda e: (_title_id_text(e), e)),
                 "group": labels}
                | "JoinGroups" >> beam.CoGroupByKey()
                | "WithSplitKey" >> beam.FlatMapTuple(_with_split_key))
    split_stats = examples | "WriteSplits" >> WriteSplits(
        out_dir, config.preprocess.eval_fraction, config.preprocess.num_shards)
    stat_pairs = (
        catalog | "ReadStats" >> beam.Map(lambda _: (("read", ""), 1)),
        manifest_lines | "LineStats" >> beam.FlatMap(manifest_line_stats),
        rejects | "RejectStats" >> beam.FlatMap(reject_stats),
        posters | "PosterStats" >> beam.FlatMapTuple(_poster_stats),
        posters | "DuplicateImageStats" >> _DuplicateImages(),
        split_stats,
        duplicate_stats,
    ) | "AllStats" >> beam.Flatten()
    _ = stat_pairs | "CountStats" >> CountStats(storage.join(out_dir, COUNTS_FILE), STATS_SECTIONS)


class _DuplicateImages(beam.PTransform):
    """(row, poster) → one stat pair per exact duplicate: a sha256 seen n times counts n - 1."""

    def expand(self, posters):
        return (posters
                | "Sha256" >> beam.MapTuple(lambda row, poster: poster.sha256)
                | "CountBySha256" >> beam.combiners.Count.PerElement()
                | "Duplicates" >> beam.FlatMapTuple(
                    lambda sha, n: [(("duplicate_images", ""), n - 1)] if n > 1 else []))


def _raw_example(row: CatalogRow, poster: ValidPoster) -> dict:
    """What tensorflow-transform sees of a title: its id and genres (never the poster)."""
    return {FEATURE_TITLE_ID: row.title_id, RAW_FEATURE_GENRES: list(row.genres)}


def _title_id_text(example: dict) -> str:
    value = example[FEATURE_TITLE_ID]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _with_split_key(title_id: str, joined: dict):
    key = next(iter(joined["group"]), title_id)  # a title in no duplicate group splits by its own id
    for example in joined["example"]:
        yield {**example, SPLIT_KEY: key}


def _split_index(example: dict, num_partitions: int, eval_fraction: float) -> int:
    return int(is_eval(example.get(SPLIT_KEY) or _title_id_text(example), eval_fraction))


def _example_stats(example: dict, split_key: str):
    yield (split_key, ""), 1
    if int(example[FEATURE_PRIMARY_GENRE]) < 0:
        yield ("titles_without_vocabulary_genre", ""), 1


def _poster_stats(row: CatalogRow, poster: ValidPoster):
    yield ("accepted", ""), 1
    yield ("lines", "accepted"), row.lines
    for genre in row.genres:
        yield ("genre_counts", genre), 1
    if poster.converted_from:
        yield ("converted_to_rgb", poster.converted_from), 1


# --- launcher ----------------------------------------------------------------------------------------------

def run(argv: list[str] | None = None, save_main_session: bool = True,
        test_pipeline: beam.Pipeline | None = None) -> dict:
    """Runs the pipeline for `posters preprocess` flags; returns the published stats.

    Raises `ErrorBudgetExceeded` (nothing published), `CatalogError` or `ConfigError` for what the user must fix.
    """
    parser = command_parser("preprocess", __doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, help="catalog manifest (CSV, JSONL or Parquet; local or gs://)")
    parser.add_argument("--out", required=True, help="output directory (local or gs://), replaced when complete")
    args, config, beam_args = parse_command(parser, sys.argv[1:] if argv is None else argv)
    storage.check_output_location(args.out, {"--catalog": args.catalog,
                                             "catalog.poster_root": config.catalog.poster_root})
    if not storage.exists(args.catalog):
        raise CatalogError(f"catalog manifest not found: {args.catalog}")
    pipeline = make_pipeline(config, beam_args, save_main_session, test_pipeline)
    staging, work_dir = storage.staging_uri(args.out), _work_dir(pipeline.options)
    started = time.time()
    print(f"preprocess: {args.catalog} → {args.out} (staging {staging})", flush=True)
    try:
        build_pipeline(pipeline, args.catalog, staging, work_dir, config)
        pipeline.run().wait_until_finish()
        transform_output = storage.join(work_dir, TRANSFORM_OUTPUT)
        _declare_image_feature(storage.join(transform_output, TRANSFORMED_METADATA_DIR))
        for name in (TRANSFORM_FN_DIR, TRANSFORMED_METADATA_DIR):
            _copy_tree(storage.join(transform_output, name), storage.join(staging, name))
        stats = _final_stats(staging, transform_output, args, config, time.time() - started)
    except BaseException:
        storage.delete_tree(staging)
        raise
    finally:
        storage.delete_tree(work_dir)
    write_stats_and_check_budget(stats, staging, args.out, "preprocess.max_reject_fraction")
    storage.publish_directory(staging, args.out, summary={k: stats[k] for k in ("read", "accepted", "rejected")})
    return stats


def _declare_image_feature(metadata_dir: str) -> None:
    """Adds the `image` feature (made beside TFT, not by it) to the transformed metadata TFT wrote."""
    from tensorflow_transform.tf_metadata import metadata_io, schema_utils

    from pipelines.preprocess.transform import TRANSFORMED_IMAGE_SPEC

    metadata = metadata_io.read_metadata(metadata_dir)
    if not any(feature.name == FEATURE_IMAGE for feature in metadata.schema.feature):
        metadata.schema.feature.extend(schema_utils.schema_from_feature_spec(TRANSFORMED_IMAGE_SPEC).feature)
        metadata_io.write_metadata(metadata, metadata_dir)


def _work_dir(options: PipelineOptions) -> str:
    temp_location = options.view_as(GoogleCloudOptions).temp_location
    if temp_location:
        return storage.join(temp_location, f"posters-preprocess-{uuid.uuid4().hex[:12]}")
    return tempfile.mkdtemp(prefix="posters-preprocess-")


def _copy_tree(source: str, target: str) -> None:
    """Copies every file under `source` to `target`, across filesystems (local → gs:// included)."""
    source = source.rstrip("/")
    for path in storage.list_files(source):
        storage.write_bytes(storage.join(target, path[len(source) + 1:]), storage.read_bytes(path))


def _final_stats(staging: str, transform_output: str, args, config: Config, seconds: float) -> dict:
    import tensorflow_transform as tft

    stats = storage.read_json(storage.join(staging, COUNTS_FILE))
    storage.delete_tree(storage.join(staging, COUNTS_FILE))
    vocabulary_size = tft.TFTransformOutput(transform_output).vocabulary_size_by_name(GENRE_VOCABULARY_NAME)
    stats.update(budget_figures(stats, config.preprocess.duplicate_title_policy,
                                config.preprocess.max_reject_fraction),
                 vocabulary_size=vocabulary_size, catalog=args.catalog, out=args.out, seconds=round(seconds, 1))
    check_accounting(stats, ("accepted",))
    if stats["unsettled_duplicate_links"]:
        raise ConfigError(f"{stats['unsettled_duplicate_links']} duplicate-poster links still join titles of "
                          f"different groups after preprocess.duplicate_group_rounds="
                          f"{config.preprocess.duplicate_group_rounds} rounds (chains of near-duplicates longer "
                          "than that): raise it so that no group is split across train and eval")
    if stats["train_examples"] + stats["eval_examples"] != stats["accepted"]:
        raise RuntimeError(f"accounting broken: train {stats['train_examples']} + eval {stats['eval_examples']} "
                           f"!= accepted {stats['accepted']}")
    return stats


def summary_line(stats: dict) -> str:
    reasons = top_reasons(stats) or "none"
    return (f"preprocess: {stats['read']} read, {stats['accepted']} accepted ({stats['train_examples']} train / "
            f"{stats['eval_examples']} eval), {stats['rejected']} rejected ({reasons}); "
            f"{stats['vocabulary_size']} genres, {stats['duplicate_images']} duplicate images, "
            f"{stats['titles_in_duplicate_groups']} titles in {stats['duplicate_groups']} duplicate-poster groups "
            f"(split together, {DUPLICATE_GROUPS_DIR}/); "
            f"{stats['seconds']} s → {stats['out']}")


def main(argv: list[str]) -> int:
    try:
        stats = run(argv)
    except (ConfigError, CatalogError, ErrorBudgetExceeded, storage.OutputLocationError) as err:
        print(f"posters preprocess: {err}", file=sys.stderr)
        return 1
    print(summary_line(stats), flush=True)
    return 0
