"""A tiny preprocess output in the real contract (pipelines/preprocess.py), for trainer tests.

It has what the trainer reads from a real preprocess run and nothing the trainer could lean on that a real run
lacks: gzip TFRecord shards `train/part-*` and `eval/part-*` with the transformed features, the genre vocabulary
as the TFT asset `transform_fn/assets/<GENRE_VOCABULARY_NAME>`, `transformed_metadata/` (the feature spec,
written by tensorflow-transform's own metadata writer), `_stats.json` and `_SUCCESS`.

Posters are learnable on purpose: each genre has its own colour, so a few epochs separate them.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from pipelines.contracts import (
    FEATURE_IMAGE,
    FEATURE_LABELS,
    FEATURE_PRIMARY_GENRE,
    FEATURE_TITLE_ID,
    GENRE_VOCABULARY_NAME,
    PREPROCESS_EVAL_PREFIX,
    PREPROCESS_TRAIN_PREFIX,
    STATS_FILE,
    SUCCESS_FILE,
    TRANSFORM_FN_DIR,
    TRANSFORMED_METADATA_DIR,
)
from trainer.data import PosterSplit

GENRES = ("Action", "Comedy", "Drama", "Horror")
GENRE_COLOURS = np.array([(220, 40, 30), (250, 210, 40), (60, 90, 200), (30, 30, 30), (40, 180, 90),
                          (200, 80, 220)], np.float32)


def poster_png(primary: int, rng: np.random.Generator, size: int) -> bytes:
    """A size×size PNG: the genre's colour with a lighter band and pixel noise."""
    pixels = np.broadcast_to(GENRE_COLOURS[primary % len(GENRE_COLOURS)], (size, size, 3)).copy()
    band = rng.integers(0, size - size // 4)
    pixels[band:band + size // 4] = pixels[band:band + size // 4] * 0.5 + 100
    pixels += rng.normal(0, 12, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def poster_split(n: int, num_genres: int = len(GENRES), size: int = 32, seed: int = 0) -> PosterSplit:
    """`n` posters; primary genres cycle through the vocabulary, every third poster has a second genre."""
    rng = np.random.default_rng(seed)
    primary = np.arange(n) % num_genres
    labels = np.zeros((n, num_genres), np.float32)
    labels[np.arange(n), primary] = 1.0
    labels[np.arange(0, n, 3), (primary[::3] + 1) % num_genres] = 1.0
    return PosterSplit(
        title_ids=np.array([f"tt{seed:02d}{i:05d}".encode() for i in range(n)], dtype=object),
        images=np.array([poster_png(int(g), rng, size) for g in primary], dtype=object),
        labels=labels,
        primary_genre=primary.astype(np.int64),
    )


def _example(split: PosterSplit, i: int) -> bytes:
    feature = {
        FEATURE_TITLE_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[split.title_ids[i]])),
        FEATURE_IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[split.images[i]])),
        FEATURE_LABELS: tf.train.Feature(float_list=tf.train.FloatList(value=split.labels[i].tolist())),
        FEATURE_PRIMARY_GENRE: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(split.primary_genre[i])])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_shard(path: str, split: PosterSplit) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for i in range(len(split)):
            writer.write(_example(split, i))


def _write_metadata(out_dir: str, num_genres: int) -> None:
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    spec = {FEATURE_TITLE_ID: tf.io.FixedLenFeature([], tf.string),
            FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
            FEATURE_LABELS: tf.io.FixedLenFeature([num_genres], tf.float32),
            FEATURE_PRIMARY_GENRE: tf.io.FixedLenFeature([], tf.int64)}
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    metadata_io.write_metadata(metadata, os.path.join(out_dir, TRANSFORMED_METADATA_DIR))


def _subset(split: PosterSplit, rows) -> PosterSplit:
    return PosterSplit(split.title_ids[rows], split.images[rows], split.labels[rows], split.primary_genre[rows])


def write_preprocess_output(out_dir: str, genres=GENRES, n_train: int = 48, n_eval: int = 24, size: int = 32,
                            seed: int = 0, label_width: int | None = None, shards: int = 1) -> str:
    """Writes the layout under `out_dir` and returns it. `label_width` ≠ len(genres) makes a mismatched output.

    Each split is written as `shards` files, poster i in shard i % shards.
    """
    width = len(genres) if label_width is None else label_width
    splits = {PREPROCESS_TRAIN_PREFIX: poster_split(n_train, width, size, seed),
              PREPROCESS_EVAL_PREFIX: poster_split(n_eval, width, size, seed + 1)}
    for prefix, split in splits.items():
        for shard in range(shards if len(split) else 0):
            _write_shard(os.path.join(out_dir, f"{prefix}-{shard:05d}-of-{shards:05d}.tfrecord.gz"),
                         _subset(split, np.arange(shard, len(split), shards)))
    assets = os.path.join(out_dir, TRANSFORM_FN_DIR, "assets")
    os.makedirs(assets, exist_ok=True)
    with open(os.path.join(assets, GENRE_VOCABULARY_NAME), "w") as handle:
        handle.write("".join(f"{genre}\n" for genre in genres))
    _write_metadata(out_dir, width)
    stats = {"train_examples": n_train, "eval_examples": n_eval, "vocabulary_size": len(genres)}
    with open(os.path.join(out_dir, STATS_FILE), "w") as handle:
        json.dump(stats, handle)
    open(os.path.join(out_dir, SUCCESS_FILE), "w").close()
    return out_dir


# A training configuration small enough for tests: tiny_cnn at 32×32, two epochs per phase, P×K = 4×4.
TINY_TRAINING = [
    "model.backbone=tiny_cnn", "model.weights=none", "model.input_size=32", "model.embedding_dim=16",
    "train.strategy=default", "train.per_replica_batch_size=8", "train.warmup_epochs=2", "train.metric_epochs=2",
    "train.classes_per_batch=4", "train.examples_per_class=4",
    'train.unfreeze_schedule=[["block_3"], ["block_2"], ["block_1"]]',
]


def tiny_config(*overrides: str):
    from pipelines.config import load_config

    return load_config(None, TINY_TRAINING + list(overrides))


def write_tiny_config(path: str, *overrides: str) -> str:
    """The tiny configuration as a YAML file for `posters train --config`."""
    import yaml

    config = tiny_config(*overrides)
    with open(path, "w") as handle:
        yaml.safe_dump({"model": config.model.model_dump(), "train": config.train.model_dump()}, handle)
    return path
