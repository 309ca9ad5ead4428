"""The trainer's input: tf.data streams over the preprocess output's TFRecord shards, never a split in memory.

    open_train(...)    one pass over this worker's shards: counts per primary genre, the input-size check, and one
                       local record file per genre (what phase 2's P×K batches draw from)
    genre_batches      phase 1: interleaved shard reads, a seeded shuffle buffer, parallel parse + PNG decode, prefetch
    pk_batches         phase 2: P×K batches, P distinct genres per batch (a stateless shuffle per batch number), the
                       next K posters of each drawn genre from that genre's (shuffled, repeated) record stream
    eval_batches       every poster of a split once, in a fixed order, with its labels

Input pipelines. The stream is defined over S input pipelines (`train.input_pipelines`, default one per worker):
pipeline p reads shards p, p+S, p+2S, … (file sharding) and contributes 1/S of every global batch. A global batch
therefore depends on the data, the seed and S, not on how many workers host the pipelines: one worker hosting both
pipelines of S = 2 trains on exactly the batches two workers hosting one each train on
(tests/trainer/test_multi_worker.py). Worker w of n hosts pipelines w, w+n, …, so S must be a multiple of n.

gs:// shards are copied once to a local cache per worker through `pipelines.common.storage` (the URIs every stage
uses; TensorFlow's own gs:// file system does not honour the GCS emulator the tests run against), then streamed from
there; local shards are read in place. Memory is bounded by the shuffle buffers (`train.shuffle_buffer` posters),
not by the split; local disk holds one copy of the worker's shards (the per-genre files, plus the gs:// copies).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from apache_beam.io.filesystems import FileSystems  # what `pipelines.common.storage` reads and writes through

from pipelines.common import storage
from pipelines.contracts import FEATURE_IMAGE, FEATURE_LABELS, FEATURE_PRIMARY_GENRE
from trainer.data import SPLIT_PREFIXES, TrainingDataError, check_label_width, decode_pixels, transform_output
from trainer.distribute import sum_over_workers, worker_rank
from trainer.sampler import check_pk

AUTOTUNE = tf.data.AUTOTUNE
GZIP = "GZIP"
INDEX_BATCH = 512  # records parsed together in the indexing pass (labels only)


@dataclass
class PipelineShards:
    """One input pipeline's shards (local paths) and what the indexing pass found in them."""

    pipeline: int
    files: list[str]
    genre_counts: np.ndarray  # int64 [G]: posters per primary genre (posters without one are not counted)
    genre_files: list[str]  # one uncompressed TFRecord file per genre ("" where the pipeline has none)
    examples: int


@dataclass
class EvalInput:
    """A split read whole, in order (the evaluation): its local shards and how many posters they hold.

    `datasets` holds the split's dataset per batch size (`eval_batches`), built once and iterated at every evaluation
    (a new one each time traced its parse function again: ~0.05 CPU s per evaluation, one per phase-2 epoch).
    """

    files: list[str]
    feature_spec: dict
    input_size: int
    examples: int
    datasets: dict[int, tf.data.Dataset] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class TrainInput:
    """The train split as this worker streams it: the pipelines it hosts, and counts over every pipeline."""

    pipelines: list[PipelineShards]
    num_pipelines: int
    feature_spec: dict
    input_size: int
    examples: int  # over all pipelines (all workers)
    eligible: int  # posters with a primary genre, over all pipelines


def split_shards(data_dir: str, split: str) -> list[str]:
    """The URIs of a split's TFRecord shards, sorted."""
    return storage.list_files(storage.join(data_dir, SPLIT_PREFIXES[split]) + "*")


def feature_spec(data_dir: str, vocabulary: list[str]) -> dict:
    spec = transform_output(data_dir).transformed_feature_spec()
    check_label_width(spec, vocabulary, data_dir)
    return {name: spec[name] for name in (FEATURE_IMAGE, FEATURE_LABELS, FEATURE_PRIMARY_GENRE)}


def local_shards(uris: list[str], cache_dir: str) -> list[str]:
    """Local paths of `uris`: local files as they are, gs:// objects copied (once) under `cache_dir`."""
    paths = []
    for uri in uris:
        if not storage.is_gcs(uri):
            paths.append(uri)
            continue
        path = os.path.join(cache_dir, "shards", uri[len("gs://"):])
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with FileSystems.open(uri, compression_type="uncompressed") as source, open(path + ".part", "wb") as out:
                shutil.copyfileobj(source, out, 4 << 20)
            os.replace(path + ".part", path)
        paths.append(path)
    return paths


def pipeline_files(uris: list[str], pipeline: int, num_pipelines: int, split: str, data_dir: str) -> list[str]:
    if len(uris) < num_pipelines:
        raise TrainingDataError(f"{data_dir}: the {split} split has {len(uris)} shard(s), fewer than the "
                                f"{num_pipelines} input pipelines (train.input_pipelines, default one per worker); "
                                "preprocess with more preprocess.num_shards")
    return uris[pipeline::num_pipelines]


def index_pipeline(files: list[str], pipeline: int, spec: dict, vocabulary: list[str], input_size: int,
                   cache_dir: str | None, where: str) -> PipelineShards:
    """One pass over `files`: per-genre counts and (with a `cache_dir`) record files; refuses bad examples."""
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    genre_files = [os.path.join(cache_dir or "", f"genre-{g:04d}.tfrecord") for g in range(len(vocabulary))]
    writers: dict[int, tf.io.TFRecordWriter] = {}
    counts = np.zeros(len(vocabulary), np.int64)
    examples = 0
    label_spec = {FEATURE_PRIMARY_GENRE: spec[FEATURE_PRIMARY_GENRE]}
    records = tf.data.TFRecordDataset(files, compression_type=GZIP).batch(INDEX_BATCH)
    try:
        for serialized in records:
            primary = tf.io.parse_example(serialized, label_spec)[FEATURE_PRIMARY_GENRE].numpy()
            if examples == 0:
                _check_input_size(serialized[0], spec, input_size, where)
            _check_genres(primary, len(vocabulary), where)
            examples += len(primary)
            counts += np.bincount(primary[primary >= 0], minlength=len(vocabulary))
            for record, genre in zip(serialized.numpy() if cache_dir else (), primary):
                if genre >= 0:
                    if genre not in writers:
                        writers[genre] = tf.io.TFRecordWriter(genre_files[genre])
                    writers[genre].write(record)
    finally:
        for writer in writers.values():
            writer.close()
    genre_files = [path if count and cache_dir else "" for path, count in zip(genre_files, counts)]
    return PipelineShards(pipeline, files, counts, genre_files, examples)


def _check_input_size(record: tf.Tensor, spec: dict, input_size: int, where: str) -> None:
    png = tf.io.parse_single_example(record, {FEATURE_IMAGE: spec[FEATURE_IMAGE]})[FEATURE_IMAGE]
    height, width, _ = tf.io.decode_png(png, channels=3).shape
    if (height, width) != (input_size, input_size):
        raise TrainingDataError(f"{where}: posters were preprocessed at {width}×{height} but model.input_size is "
                                f"{input_size}; preprocess and train with the same model.input_size")


def _check_genres(primary: np.ndarray, num_genres: int, where: str) -> None:
    out_of_range = (primary < -1) | (primary >= num_genres)
    if out_of_range.any():
        raise TrainingDataError(f"{where}: primary_genre {primary[out_of_range][0]} is outside the "
                                f"{num_genres}-genre vocabulary; rerun `posters preprocess`")


def open_train(data_dir: str, vocabulary: list[str], input_size: int, input_pipelines: int | None, strategy,
               cache_dir: str) -> TrainInput:
    """Indexes the train pipelines this worker hosts (worker w of n: w, w+n, …); counts are summed over workers."""
    rank, workers = worker_rank()
    num_pipelines = input_pipelines or workers
    if num_pipelines % workers:
        raise TrainingDataError(f"train.input_pipelines = {num_pipelines} is not a multiple of the {workers} workers")
    spec, uris = feature_spec(data_dir, vocabulary), split_shards(data_dir, "train")
    if not uris:
        raise _empty_split(data_dir, "train", 0)
    pipelines = []
    for pipeline in range(rank, num_pipelines, workers):
        files = local_shards(pipeline_files(uris, pipeline, num_pipelines, "train", data_dir), cache_dir)
        pipelines.append(index_pipeline(files, pipeline, spec, vocabulary, input_size,
                                        os.path.join(cache_dir, f"train-{pipeline}"), f"{data_dir} (train)"))
    local = np.array([sum(p.examples for p in pipelines), sum(int(p.genre_counts.sum()) for p in pipelines)])
    examples, eligible = (int(n) for n in sum_over_workers(strategy, local))
    if examples == 0:
        raise _empty_split(data_dir, "train", len(uris))
    return TrainInput(pipelines, num_pipelines, spec, input_size, examples, eligible)


def open_eval(data_dir: str, vocabulary: list[str], input_size: int, cache_dir: str) -> EvalInput:
    """The eval split, checked and counted in one pass over its labels."""
    spec, uris = feature_spec(data_dir, vocabulary), split_shards(data_dir, "eval")
    files = local_shards(uris, cache_dir)
    where = f"{data_dir} (eval)"
    examples = index_pipeline(files, 0, spec, vocabulary, input_size, None, where).examples if files else 0
    if examples == 0:
        raise _empty_split(data_dir, "eval", len(uris))
    return EvalInput(files, spec, input_size, examples)


def _empty_split(data_dir: str, split: str, shards: int) -> TrainingDataError:
    return TrainingDataError(f"{data_dir}: the {split} split is empty ({shards} shards); the catalog needs more "
                             "accepted posters, or a preprocess.eval_fraction that leaves both splits some")


# --- decoding ---------------------------------------------------------------------------------------------------

def _batch_parser(spec: dict, input_size: int, target: str):
    """serialized Examples [B] → (uint8 pixels [B, S, S, 3], the target feature [B, …]): one parse per batch, then
    one PNG decode per poster (per-poster parsing in tf.data costs more than the decode of a small poster)."""
    wanted = {FEATURE_IMAGE: spec[FEATURE_IMAGE], target: spec[target]}
    pixels_spec = tf.TensorSpec([input_size, input_size, 3], tf.uint8)

    def parse(serialized):
        features = tf.io.parse_example(serialized, wanted)
        pixels = tf.map_fn(decode_pixels, features[FEATURE_IMAGE], fn_output_signature=pixels_spec)
        return pixels, features[target]

    return parse


def _decoded_batches(records: tf.data.Dataset, spec: dict, input_size: int, target: str, batch: int,
                     drop_remainder: bool = True):
    return (records.batch(batch, drop_remainder=drop_remainder)
            .map(_batch_parser(spec, input_size, target), num_parallel_calls=AUTOTUNE))


def _stream_seed(seed: int, pipeline: int, salt: int = 0) -> int:
    return int(np.random.default_rng([seed, pipeline, salt]).integers(2**31))


def _concat_pipelines(streams: list[tf.data.Dataset]) -> tf.data.Dataset:
    """Batch b of each pipeline, concatenated in pipeline order: this worker's share of global batch b."""
    if len(streams) == 1:
        return streams[0].prefetch(AUTOTUNE)
    zipped = tf.data.Dataset.zip(tuple(streams))
    return zipped.map(lambda *parts: tuple(tf.concat(column, 0) for column in zip(*parts)),
                      num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def _share(global_batch: int, num_pipelines: int, what: str) -> int:
    if global_batch % num_pipelines:
        raise TrainingDataError(f"{what} = {global_batch} does not split evenly over {num_pipelines} input pipelines "
                                "(train.input_pipelines)")
    return global_batch // num_pipelines


# --- phase 1 ----------------------------------------------------------------------------------------------------

def genre_batches(train: TrainInput, global_batch: int, seed: int, shuffle_buffer: int,
                  skip_batches: int = 0) -> tf.data.Dataset:
    """Phase 1: endless (pixels uint8 [b, S, S, 3], multi-hot labels [b, G]), b = this worker's share.

    The stream is fixed by the seed (deterministic interleave and seeded shuffles), so skipping `skip_batches`
    resumes it exactly where an interrupted run left it.
    """
    share = _share(global_batch, train.num_pipelines, "the phase 1 global batch")
    streams = []
    for shards in train.pipelines:
        files = tf.data.Dataset.from_tensor_slices(shards.files)
        files = files.shuffle(len(shards.files), seed=_stream_seed(seed, shards.pipeline))
        records = files.repeat().interleave(lambda path: tf.data.TFRecordDataset(path, compression_type=GZIP),
                                            cycle_length=min(4, len(shards.files)), num_parallel_calls=AUTOTUNE,
                                            deterministic=True)
        records = records.shuffle(shuffle_buffer, seed=_stream_seed(seed, shards.pipeline, 1))
        records = records.skip(skip_batches * share)  # before decoding: skipped posters are not decoded
        streams.append(_decoded_batches(records, train.feature_spec, train.input_size, FEATURE_LABELS, share))
    return _concat_pipelines(streams)


# --- phase 2 ----------------------------------------------------------------------------------------------------

def pk_batches(train: TrainInput, classes_per_batch: int, examples_per_class: int, seed: int, epochs: int,
               steps: int, first_epoch: int, shuffle_buffer: int, target: str) -> tf.data.Dataset:
    """Phase 2: (pixels, targets) P×K batches for epochs `first_epoch`…`epochs - 1`, this worker's share.

    Each pipeline draws P/S genres per batch among the genres its shards hold and K posters of each; `target` is
    FEATURE_PRIMARY_GENRE or FEATURE_LABELS (shared-genre positives).
    """
    classes_share = _share(classes_per_batch, train.num_pipelines, "train.classes_per_batch")
    streams = []
    for shards in train.pipelines:
        present = np.flatnonzero(shards.genre_counts > 0)
        try:
            check_pk(len(present), classes_share, examples_per_class)
        except ValueError as err:
            raise TrainingDataError(f"phase 2 (train.classes_per_batch, train.examples_per_class), input pipeline "
                                    f"{shards.pipeline}: {err}") from err
        buffer = max(shuffle_buffer // len(present), 4 * examples_per_class)
        per_genre = [tf.data.TFRecordDataset(shards.genre_files[g])
                     .shuffle(int(min(buffer, shards.genre_counts[g])), seed=_stream_seed(seed, shards.pipeline, 2 + g))
                     .repeat() for g in present]
        choices = _genre_choices(len(present), classes_share, examples_per_class, seed, epochs, steps,
                                 shards.pipeline)
        records = tf.data.Dataset.choose_from_datasets(per_genre, choices)
        records = records.skip(first_epoch * steps * classes_share * examples_per_class)
        streams.append(_decoded_batches(records, train.feature_spec, train.input_size, target,
                                        classes_share * examples_per_class))
    return _concat_pipelines(streams)


def _genre_choices(num_present: int, classes: int, examples: int, seed: int, epochs: int, steps: int,
                   pipeline: int) -> tf.data.Dataset:
    """The position (among the genres present) of every poster's genre, batch by batch: P distinct genres drawn by a
    stateless shuffle seeded by (seed, pipeline, batch number), K times each, class-major. Nothing is held ahead."""
    stream_seed = tf.constant(_stream_seed(seed, pipeline, 1 << 20), tf.int64)

    def batch_genres(batch_number):
        order = tf.random.experimental.stateless_shuffle(tf.range(num_present, dtype=tf.int64),
                                                         seed=tf.stack([stream_seed, batch_number]))
        return tf.repeat(order[:classes], examples)

    return tf.data.Dataset.range(epochs * steps).map(batch_genres).unbatch()


# --- evaluation -------------------------------------------------------------------------------------------------

def eval_batches(evaluation: EvalInput, batch: int) -> tf.data.Dataset:
    """Every poster once, in a fixed order: (pixels, multi-hot labels); the last batch may be short. The same
    dataset for the same `batch` (each iteration reads the split again)."""
    if batch not in evaluation.datasets:
        records = tf.data.TFRecordDataset(evaluation.files, compression_type=GZIP,
                                          num_parallel_reads=min(4, len(evaluation.files)))
        evaluation.datasets[batch] = _decoded_batches(records, evaluation.feature_spec, evaluation.input_size,
                                                      FEATURE_LABELS, batch, drop_remainder=False).prefetch(AUTOTUNE)
    return evaluation.datasets[batch]
