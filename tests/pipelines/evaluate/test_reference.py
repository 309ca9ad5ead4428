"""The reference points: a normalised colour thumbnail, seeded random vectors (the colour histogram:
tests/pipelines/common/test_image_features.py)."""
import numpy as np
from PIL import Image

from pipelines.evaluate.reference import colour_thumbnail, random_vectors


def test_thumbnail_is_unit_length_and_ignores_brightness_offsets():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 200, (90, 60, 3), dtype=np.uint8))
    brighter = Image.fromarray((np.asarray(image) + 40).astype(np.uint8))
    a, b = colour_thumbnail(image), colour_thumbnail(brighter)
    assert a.shape == (288,) and np.isclose(np.linalg.norm(a), 1.0)
    assert float(a @ b) > 0.999


def test_random_vectors_are_seeded():
    assert np.array_equal(random_vectors(5, 8, 1), random_vectors(5, 8, 1))
    assert not np.array_equal(random_vectors(5, 8, 1), random_vectors(5, 8, 2))
