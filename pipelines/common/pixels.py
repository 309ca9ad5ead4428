"""The one definition of how a poster becomes model input, shared by training data, the validator and the serving
graph.

`poster_pixels` runs in the preprocess pipeline (the training data's image), inside the exported model's serving
signature, in the poster validator, and — through `PixelDecoder` — in the embed pipeline's model handler, which
decodes each batch once and feeds the pixels to the model's pixel signature: all of them see exactly the same
pixels.

A JPEG is decoded at the smallest DCT scale (1/8, 1/4, 1/2 or 1) whose output still covers the model's input
size on both sides (libjpeg's scaled decode: the inverse DCT makes fewer pixels, the entropy decoding still reads
the whole stream, so a corrupted or truncated file fails as in a full decode); any other format is decoded whole.
The decoded image is then resized to the square input.
"""
from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf

DCT_RATIOS = (1, 2, 4, 8)  # the scales libjpeg's (and TensorFlow's `decode_jpeg(ratio=…)`) scaled decode offers


def dct_ratio(width: int, height: int, size: int) -> int:
    """The largest DCT ratio r whose decode (ceil(side / r) pixels per side, as libjpeg rounds) still has at
    least `size` pixels on both sides; 1 when even a full decode is smaller."""
    shortest = min(width, height)
    return max([r for r in DCT_RATIOS if -(-shortest // r) >= size], default=1)


def _jpeg_ratio_index(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """`DCT_RATIOS.index(dct_ratio(width, height, size))` from the JPEG's header, as a graph op."""
    shortest = tf.reduce_min(tf.image.extract_jpeg_shape(image_bytes)[:2])
    # ceil(side / r) >= size  ⇔  side > (size - 1) * r; the ratios that cover are a prefix of DCT_RATIOS.
    return tf.add_n([tf.cast(shortest > (size - 1) * r, tf.int32) for r in DCT_RATIOS[1:]])


def decode_poster(image_bytes: tf.Tensor, size: int | None = None) -> tf.Tensor:
    """Encoded image bytes (scalar string) → uint8 RGB [height, width, 3], first frame only: the decoder the model
    uses. With `size`, a JPEG is decoded at the DCT scale `dct_ratio` picks for that input size. Raises
    `tf.errors.InvalidArgumentError` when it cannot decode."""

    def whole():
        return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

    if size is None:
        return whole()

    def jpeg():
        branches = [lambda r=r: tf.io.decode_jpeg(image_bytes, channels=3, ratio=r) for r in DCT_RATIOS]
        return tf.switch_case(_jpeg_ratio_index(image_bytes, size), branches)

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, whole)


def resize_pixels(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 RGB [height, width, 3] → uint8 RGB [size, size, 3]: the whole poster squeezed to a square (its 2:3
    aspect is not kept, as the seed did), bilinear with antialiasing, rounded back to uint8."""
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def poster_pixels(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded image bytes (scalar string) → uint8 RGB [size, size, 3]: `decode_poster` at the input size, then
    `resize_pixels`."""
    return resize_pixels(decode_poster(image_bytes, size), size)


class PixelDecoder:
    """`poster_pixels` for one input size as traced functions: `decode_batch` (a batch in one call, the embed
    model handler's decode) and `decode` (one poster, to find which poster of a failing batch fails). Built lazily,
    once per process, safe to call from several threads; pickles as its size only."""

    def __init__(self, size: int):
        self.size = size
        self._lock = threading.Lock()
        self._one = self._batch = None

    def _build(self) -> None:
        with self._lock:
            if self._batch is None:
                size = self.size
                spec = tf.TensorSpec([size, size, 3], tf.uint8)
                self._one = tf.function(lambda data: poster_pixels(data, size),
                                        input_signature=[tf.TensorSpec([], tf.string)])
                self._batch = tf.function(
                    lambda batch: tf.map_fn(lambda data: poster_pixels(data, size), batch, fn_output_signature=spec),
                    input_signature=[tf.TensorSpec([None], tf.string)])

    def decode(self, data: bytes) -> np.ndarray:
        """Encoded bytes → uint8 [size, size, 3]; raises `tf.errors.OpError` when TensorFlow cannot decode them."""
        if self._one is None:
            self._build()
        return self._one(tf.constant(data)).numpy()

    def decode_batch(self, images) -> np.ndarray:
        """Encoded images → uint8 [n, size, size, 3]; `tf.errors.OpError` when any of them does not decode."""
        if self._batch is None:
            self._build()
        return self._batch(tf.constant(list(images), dtype=tf.string)).numpy()

    def __getstate__(self):
        return {"size": self.size}

    def __setstate__(self, state):
        self.__init__(state["size"])
