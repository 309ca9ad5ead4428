"""The preprocess stage's tensorflow-transform definition.

`make_preprocessing_fn(config)` is the tensorflow-transform `preprocessing_fn` of the preprocess pipeline: raw
features (`raw_feature_spec`) → the transformed features of `pipelines.contracts` (title_id, image as a PNG of
`poster_pixels`, multi-hot labels, primary_genre) with the genre vocabulary computed over the whole catalog.
"""
from __future__ import annotations

import tensorflow as tf

from pipelines.common.pixels import poster_pixels
from pipelines.config import Config
from pipelines.contracts import (
    FEATURE_IMAGE,
    FEATURE_LABELS,
    FEATURE_PRIMARY_GENRE,
    FEATURE_TITLE_ID,
    GENRE_VOCABULARY_NAME,
    RAW_FEATURE_GENRES,
)


def raw_feature_spec() -> dict:
    """What the preprocess pipeline feeds tensorflow-transform, one instance per accepted catalog row."""
    return {
        FEATURE_TITLE_ID: tf.io.FixedLenFeature([], tf.string),
        FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),  # the validated poster's encoded bytes
        RAW_FEATURE_GENRES: tf.io.VarLenFeature(tf.string),
    }


def make_preprocessing_fn(config: Config):
    """The `preprocessing_fn` for `config`: images at `model.input_size`, vocabulary by `preprocess.vocab_*`."""
    # Imported here: the serving graph needs `poster_pixels` only, not tensorflow-transform.
    import tensorflow_transform as tft

    size = config.model.input_size
    top_k = config.preprocess.vocab_top_k
    # TFT warns that a threshold of 1 is a no-op; None says the same quietly.
    threshold = config.preprocess.vocab_frequency_threshold
    frequency_threshold = threshold if threshold > 1 else None

    def preprocessing_fn(inputs: dict) -> dict:
        genre_ids = tft.compute_and_apply_vocabulary(
            inputs[RAW_FEATURE_GENRES], top_k=top_k, frequency_threshold=frequency_threshold,
            vocab_filename=GENRE_VOCABULARY_NAME, default_value=-1)
        num_genres = tft.experimental.get_vocabulary_size_by_name(GENRE_VOCABULARY_NAME)
        return {
            FEATURE_TITLE_ID: inputs[FEATURE_TITLE_ID],
            FEATURE_IMAGE: tf.map_fn(lambda image: tf.io.encode_png(poster_pixels(image, size)),
                                     inputs[FEATURE_IMAGE], fn_output_signature=tf.string),
            **genre_targets(genre_ids, num_genres),
        }

    return preprocessing_fn


def genre_targets(genre_ids: tf.SparseTensor, num_genres: tf.Tensor) -> dict:
    """Per-row vocabulary ids (-1: not in the vocabulary) → multi-hot `labels` and `primary_genre`.

    `primary_genre` is the first listed genre that is in the vocabulary, -1 when none is.
    """
    ids = tf.RaggedTensor.from_sparse(genre_ids)
    known = tf.ragged.boolean_mask(ids, ids >= 0)
    labels = tf.math.bincount(known, minlength=num_genres, maxlength=num_genres, binary_output=True,
                              axis=-1, dtype=tf.float32)
    # bincount loses the static width; after analysis num_genres is a constant and the shape becomes fixed.
    labels = tf.reshape(labels, [-1, num_genres])
    primary = known[:, :1].to_tensor(default_value=-1, shape=[None, 1])[:, 0]
    return {FEATURE_LABELS: labels, FEATURE_PRIMARY_GENRE: primary}
