"""Reading the preprocess output (`pipelines/preprocess.py`): the genre vocabulary, and a whole split in memory.

The trainer depends on what every preprocess output has: `_SUCCESS`, the gzip TFRecord shards under `train/` and
`eval/`, the TFT transform output (feature spec and the genre vocabulary, read through `TFTransformOutput`).
Training streams the shards (`trainer/streaming.py`); `read_split` holds a split in memory as its encoded PNGs, for
tests and for the input benchmark's in-memory baseline (`genre_dataset`, `trainer/input_bench.py`).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from pipelines.common import storage
from pipelines.common.pixels import decode_poster
from pipelines.contracts import (
    FEATURE_IMAGE,
    FEATURE_LABELS,
    FEATURE_PRIMARY_GENRE,
    FEATURE_TITLE_ID,
    GENRE_VOCABULARY_NAME,
    PREPROCESS_EVAL_PREFIX,
    PREPROCESS_TRAIN_PREFIX,
    TRANSFORM_FN_DIR,
    TRANSFORMED_METADATA_DIR,
)

SPLIT_PREFIXES = {"train": PREPROCESS_TRAIN_PREFIX, "eval": PREPROCESS_EVAL_PREFIX}


class TrainingDataError(ValueError):
    """The training data cannot be used as it is; the message says what to rerun or change."""


@dataclass
class PosterSplit:
    """One split of the preprocess output, in file order."""

    title_ids: np.ndarray  # object [N] of bytes
    images: np.ndarray  # object [N] of PNG bytes, uint8 RGB at the preprocess' input size
    labels: np.ndarray  # float32 [N, num_genres], multi-hot
    primary_genre: np.ndarray  # int64 [N], vocabulary index; -1: none of its genres is in the vocabulary

    def __len__(self) -> int:
        return len(self.title_ids)


_LOCAL_TRANSFORM_OUTPUTS: dict[str, str] = {}


def transform_output(data_dir: str):
    """The TFT transform output of `data_dir`; on gs:// read from a local copy made through `storage` (once per
    process: a few small files), since TensorFlow's own gs:// file system bypasses the storage layer."""
    import tensorflow_transform as tft  # heavy; only the trainer's data reading needs it

    if not storage.is_gcs(data_dir):
        return tft.TFTransformOutput(data_dir)
    if data_dir not in _LOCAL_TRANSFORM_OUTPUTS:
        local = tempfile.mkdtemp(prefix="posters-transform-output-")
        for folder in (TRANSFORM_FN_DIR, TRANSFORMED_METADATA_DIR):
            remote = storage.join(data_dir, folder)
            for uri in storage.list_files(remote):
                path = os.path.join(local, folder, uri[len(remote) + 1:])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as handle:
                    handle.write(storage.read_bytes(uri))
        _LOCAL_TRANSFORM_OUTPUTS[data_dir] = local
    return tft.TFTransformOutput(_LOCAL_TRANSFORM_OUTPUTS[data_dir])


def read_genre_vocabulary(data_dir: str) -> list[str]:
    """The genre vocabulary the preprocess computed, in label order (index i ↔ labels[:, i])."""
    if not storage.is_complete(data_dir):
        raise TrainingDataError(f"{data_dir} is not a complete preprocess output (no _SUCCESS): run "
                                "`posters preprocess` to the end first")
    vocabulary = transform_output(data_dir).vocabulary_by_name(GENRE_VOCABULARY_NAME)
    if not vocabulary:
        raise TrainingDataError(f"{data_dir}: the genre vocabulary is empty; the catalog needs titles with genres")
    return [genre.decode("utf-8") if isinstance(genre, bytes) else genre for genre in vocabulary]


def read_split(data_dir: str, split: str, vocabulary: list[str], input_size: int) -> PosterSplit:
    """All examples of `split` ("train" or "eval"), checked against the vocabulary and the model's input size."""
    files = storage.list_files(storage.join(data_dir, SPLIT_PREFIXES[split]) + "*")
    feature_spec = transform_output(data_dir).transformed_feature_spec()
    check_label_width(feature_spec, vocabulary, data_dir)
    columns = {name: [] for name in (FEATURE_TITLE_ID, FEATURE_IMAGE, FEATURE_LABELS, FEATURE_PRIMARY_GENRE)}
    if files:
        records = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512)
        for batch in records.map(lambda serialized: tf.io.parse_example(serialized, feature_spec)):
            for name in columns:
                columns[name].append(batch[name].numpy())
    if not columns[FEATURE_TITLE_ID]:
        raise TrainingDataError(f"{data_dir}: the {split} split is empty ({len(files)} shards); the catalog "
                                f"needs more accepted posters, or a preprocess.eval_fraction that leaves both "
                                "splits some")
    poster_split = PosterSplit(*(np.concatenate(columns[name]) for name in columns))
    poster_split.primary_genre = poster_split.primary_genre.astype(np.int64)
    _check_examples(poster_split, vocabulary, input_size, f"{data_dir} ({split})")
    return poster_split


def check_label_width(feature_spec: dict, vocabulary: list[str], data_dir: str) -> None:
    shape = list(feature_spec[FEATURE_LABELS].shape)
    if shape != [len(vocabulary)]:
        raise TrainingDataError(f"{data_dir}: labels have shape {shape} but the genre vocabulary has "
                                f"{len(vocabulary)} genres; the TFRecords and transform_fn come from different "
                                "preprocess runs — rerun `posters preprocess`")


def _check_examples(split: PosterSplit, vocabulary: list[str], input_size: int, where: str) -> None:
    out_of_range = (split.primary_genre < -1) | (split.primary_genre >= len(vocabulary))
    if out_of_range.any():
        raise TrainingDataError(f"{where}: primary_genre {split.primary_genre[out_of_range][0]} is outside the "
                                f"{len(vocabulary)}-genre vocabulary; rerun `posters preprocess`")
    height, width, _ = tf.io.decode_png(split.images[0], channels=3).shape
    if (height, width) != (input_size, input_size):
        raise TrainingDataError(f"{where}: posters were preprocessed at {width}×{height} but model.input_size is "
                                f"{input_size}; preprocess and train with the same model.input_size")


# --- datasets -------------------------------------------------------------------------------------------

def decode_pixels(png: tf.Tensor) -> tf.Tensor:
    """One PNG of the preprocess output → uint8 RGB [size, size, 3], the model's input (no resizing here): the one
    decoder (`pipelines.common.pixels.decode_poster`) on the lossless PNG of the `poster_pixels` that preprocess
    computed, so training sees exactly the pixels the embed pipeline's validator feeds the model."""
    return decode_poster(png)


def _decode_batch(pngs: tf.Tensor, size: int) -> tf.Tensor:
    return tf.map_fn(decode_pixels, pngs, fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))


def genre_dataset(split: PosterSplit, batch_size: int, input_size: int, seed: int,
                  skip_batches: int = 0) -> tf.data.Dataset:
    """Endless shuffled batches of (pixels uint8 [B, S, S, 3], multi-hot labels [B, G]) from a split in memory.

    What phase 1 read before it streamed the shards (`streaming.genre_batches`); the input benchmark's baseline.
    Each pass over the split is a new seeded order; batches are whole.
    """
    if len(split) < batch_size:
        raise TrainingDataError(f"the train split has {len(split)} posters, fewer than one global batch of "
                                f"{batch_size}; lower train.per_replica_batch_size or add posters")
    dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=True).skip(skip_batches)
    return dataset.map(lambda pngs, labels: (_decode_batch(pngs, input_size), labels),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
