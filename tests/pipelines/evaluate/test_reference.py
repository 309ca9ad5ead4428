"""The reference points: a 64-bin colour histogram, a normalised colour thumbnail, seeded random vectors."""
import numpy as np
from PIL import Image

from pipelines.evaluate.reference import colour_histogram, colour_thumbnail, random_vectors


def test_histogram_has_64_bins_that_sum_to_one_and_puts_pure_red_in_its_bin():
    red = Image.new("RGB", (10, 10), (255, 0, 0))
    histogram = colour_histogram(red)
    assert histogram.shape == (64,) and histogram.sum() == 1.0
    assert histogram[(3 * 4 + 0) * 4 + 0] == 1.0  # levels (3, 0, 0)


def test_thumbnail_is_unit_length_and_ignores_brightness_offsets():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 200, (90, 60, 3), dtype=np.uint8))
    brighter = Image.fromarray((np.asarray(image) + 40).astype(np.uint8))
    a, b = colour_thumbnail(image), colour_thumbnail(brighter)
    assert a.shape == (288,) and np.isclose(np.linalg.norm(a), 1.0)
    assert float(a @ b) > 0.999


def test_random_vectors_are_seeded():
    assert np.array_equal(random_vectors(5, 8, 1), random_vectors(5, 8, 1))
    assert not np.array_equal(random_vectors(5, 8, 1), random_vectors(5, 8, 2))
