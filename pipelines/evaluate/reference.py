"""Reference points scored exactly like the embedding: random vectors and two trivial image features.

An embedding worth its training cost beats both by a clear margin on genre retrieval; a colour thumbnail is a
strong reference for near-duplicates (a re-encoded poster keeps its colours), so it shows what the model adds.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from pipelines.common.image_features import colour_histogram

THUMBNAIL_SIZE = (8, 12)  # width × height, the 2:3 of a poster: 8 · 12 · 3 = 288 values


def random_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """`n` seeded Gaussian vectors [n, dim] (directions uniform on the sphere once normalised)."""
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def decode_rgb(poster: bytes) -> Image.Image:
    with Image.open(io.BytesIO(poster)) as image:
        return image.convert("RGB")


def colour_thumbnail(image: Image.Image) -> np.ndarray:
    """The poster shrunk to 8×12 colour pixels, flattened, centred on its mean and L2-normalised, float32 [288]."""
    small = np.asarray(image.convert("RGB").resize(THUMBNAIL_SIZE, Image.Resampling.BOX), np.float32) / 255.0
    flat = small.ravel() - small.mean()
    return flat / max(float(np.linalg.norm(flat)), 1e-6)


def image_features(posters: Sequence[bytes]) -> dict[str, np.ndarray]:
    """{"colour_histogram": [n, 64] (`pipelines.common.image_features`, also the trainer's gate reference),
    "colour_thumbnail": [n, 288]} for encoded posters."""
    images = [decode_rgb(poster) for poster in posters]
    return {"colour_histogram": np.stack([colour_histogram(image) for image in images]),
            "colour_thumbnail": np.stack([colour_thumbnail(image) for image in images])}
