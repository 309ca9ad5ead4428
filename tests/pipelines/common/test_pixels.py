"""The one pixel function: a JPEG decoded at the smallest DCT scale that covers the model's input, the same in
Python, in a traced graph and through `PixelDecoder` (the validator's decode)."""
import io
import pickle

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines.common.pixels import PixelDecoder, dct_ratio, decode_poster, poster_pixels, resize_pixels


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def smooth_poster(width: int, height: int) -> np.ndarray:
    """Gradients plus a little noise: what a downscale keeps, so decodes at different scales can be compared."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([255 * x / width, 255 * y / height, 128 + 60 * np.sin(x / 9.0 + y / 13.0)], axis=-1)
    noise = np.random.default_rng(3).normal(0, 4, pixels.shape)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


POSTER = encoded(smooth_poster(300, 450), "JPEG")


@pytest.mark.parametrize(("width", "height", "size", "ratio"), [
    (300, 450, 64, 4),  # 75×113 covers 64; 1/8 (38×57) would not
    (300, 450, 331, 1),  # NASNetLarge's input: larger than the poster, decoded whole
    (300, 450, 150, 2),  # 150×225: exactly the size
    (300, 450, 151, 1),
    (64, 96, 32, 2),
    (65, 96, 9, 8),  # ceil(65 / 8) = 9: libjpeg rounds up
    (64, 96, 9, 4),
    (10, 12, 64, 1),
])
def test_the_dct_ratio_is_the_smallest_scale_that_covers_the_input(width, height, size, ratio):
    assert dct_ratio(width, height, size) == ratio


@pytest.mark.parametrize("size", [32, 64, 150, 151, 331])
def test_decode_poster_decodes_a_jpeg_at_that_ratio_eagerly_and_in_a_graph(size):
    ratio = dct_ratio(300, 450, size)
    expected = tf.io.decode_jpeg(POSTER, channels=3, ratio=ratio).numpy()
    assert expected.shape == (-(-450 // ratio), -(-300 // ratio), 3)
    traced = tf.function(lambda data: decode_poster(data, size), input_signature=[tf.TensorSpec([], tf.string)])
    np.testing.assert_array_equal(decode_poster(tf.constant(POSTER), size).numpy(), expected)
    np.testing.assert_array_equal(traced(tf.constant(POSTER)).numpy(), expected)


def test_other_formats_and_no_size_decode_whole():
    png = encoded(smooth_poster(300, 450), "PNG")
    assert decode_poster(tf.constant(png), 32).shape == (450, 300, 3)
    assert decode_poster(tf.constant(POSTER)).shape == (450, 300, 3)


def test_the_scaled_decode_is_the_same_picture_as_a_full_decode():
    """Pixel values move by a level or two (a DCT-domain downscale, not a bilinear one), never the picture."""
    scaled = poster_pixels(tf.constant(POSTER), 64).numpy().astype(int)
    full = resize_pixels(decode_poster(tf.constant(POSTER)), 64).numpy().astype(int)
    assert scaled.shape == full.shape == (64, 64, 3)
    assert 0 < np.abs(scaled - full).mean() < 3


def test_the_pixel_decoder_is_poster_pixels_one_at_a_time_or_by_batch_and_pickles_as_its_size():
    decoder = pickle.loads(pickle.dumps(PixelDecoder(64)))
    assert decoder.size == 64
    png = encoded(smooth_poster(40, 60), "PNG")
    expected = np.stack([poster_pixels(tf.constant(image), 64).numpy() for image in (POSTER, png)])
    np.testing.assert_array_equal(decoder.decode_batch([POSTER, png]), expected)
    np.testing.assert_array_equal(decoder.decode(png), expected[1])
    with pytest.raises(tf.errors.InvalidArgumentError):
        decoder.decode(POSTER[:len(POSTER) // 2])
    with pytest.raises(tf.errors.InvalidArgumentError):
        decoder.decode_batch([png, POSTER[:len(POSTER) // 2]])
