"""The preprocess stage's tensorflow-transform definition, and the poster pixels computed beside it.

`make_preprocessing_fn(config)` is the tensorflow-transform `preprocessing_fn` of the preprocess pipeline: raw
features (`raw_feature_spec`: title_id and genres, small) → title_id, multi-hot labels and primary_genre, with the
genre vocabulary computed over the whole catalog. TFT sees no image: it analyses only genres, and a batch of
raw posters inside it could pass Arrow's 2 GB array limit. `PosterPng` makes the `image` feature (a PNG of
`poster_pixels`, the serving graph's own decode and resize) in a DoFn, one poster at a time;
`TRANSFORMED_IMAGE_SPEC` is how the image is declared beside the transform's own features in the output's
`transformed_metadata`.
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
        RAW_FEATURE_GENRES: tf.io.VarLenFeature(tf.string),
    }


# The `image` feature of the preprocess output: a PNG of the poster at the model's input size.
TRANSFORMED_IMAGE_SPEC = {FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string)}


class PosterPng:
    """Encoded poster bytes → PNG bytes of `poster_pixels(image, size)`: the training data's image, decoded and
    resized by the serving graph's own function. Built lazily once per process (a traced tf.function)."""

    def __init__(self, size: int):
        self._size = size
        self._fn = None

    def __call__(self, image_bytes: bytes) -> bytes:
        if self._fn is None:
            size = self._size
            self._fn = tf.function(lambda image: tf.io.encode_png(poster_pixels(image, size)),
                                   input_signature=[tf.TensorSpec([], tf.string)])
        return self._fn(tf.constant(image_bytes)).numpy()

    def __getstate__(self):
        return {"_size": self._size, "_fn": None}


def make_preprocessing_fn(config: Config):
    """The `preprocessing_fn` for `config`: vocabulary by `preprocess.vocab_*`."""
    # Imported here: the serving graph needs `poster_pixels` only, not tensorflow-transform.
    import tensorflow_transform as tft

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
