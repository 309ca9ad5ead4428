"""The 64-bin colour histogram: the trivial-feature reference of the trainer's gate and of `posters evaluate`."""
import io

import numpy as np
from PIL import Image

from pipelines.common.image_features import colour_histogram
from pipelines.evaluate.reference import decode_rgb, image_features


def test_histogram_has_64_bins_that_sum_to_one_and_puts_pure_red_in_its_bin():
    red = Image.new("RGB", (10, 10), (255, 0, 0))
    histogram = colour_histogram(red)
    assert histogram.shape == (64,) and histogram.sum() == 1.0
    assert histogram[(3 * 4 + 0) * 4 + 0] == 1.0  # levels (3, 0, 0)


def test_decoded_float_pixels_and_the_evaluators_poster_bytes_give_one_histogram():
    """The trainer passes decoded pixels (float, [0, 255]); the evaluator passes the poster's bytes."""
    pixels = np.random.default_rng(0).integers(0, 256, (12, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    from_bytes = image_features([buffer.getvalue()])["colour_histogram"][0]
    np.testing.assert_array_equal(colour_histogram(pixels.astype(np.float32)), from_bytes)
    np.testing.assert_array_equal(colour_histogram(decode_rgb(buffer.getvalue())), from_bytes)
