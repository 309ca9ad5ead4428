"""The one definition of how a poster becomes model input, shared by training data and the serving graph.

`poster_pixels` runs inside tensorflow-transform's `preprocessing_fn` (training data) and inside the exported
model's serving signature (embedding), so both see exactly the same pixels.
"""
from __future__ import annotations

import tensorflow as tf


def decode_poster(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded image bytes (scalar string) → uint8 RGB [height, width, 3]: the decoder the model uses, which the
    poster validator also runs on every poster it passes on unconverted (TensorFlow refuses some files PIL reads,
    such as PNGs with a wrong chunk CRC). Raises `tf.errors.InvalidArgumentError` when it cannot decode."""
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def poster_pixels(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded image bytes (scalar string) → uint8 RGB [size, size, 3].

    Decodes any format TensorFlow reads (first frame only), forces 3 channels, resizes the whole poster to a
    square (the poster's 2:3 aspect is squeezed, as the seed did), rounds back to uint8.
    """
    image = decode_poster(image_bytes)
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
