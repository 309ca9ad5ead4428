"""Trivial image features, the reference points an embedding must beat: one implementation for the trainer's
no-regression gate and for `posters evaluate`.
"""
from __future__ import annotations

import numpy as np

HISTOGRAM_LEVELS = 4  # per channel: 4 × 4 × 4 = 64 bins


def colour_histogram(pixels) -> np.ndarray:
    """64-bin RGB histogram (4 levels per channel) as shares of the pixels, float32 [64].

    `pixels`: RGB values in [0, 255], anything numpy reads as [..., 3] (a PIL image in RGB mode, a uint8 or float
    array of decoded pixels).
    """
    pixels = np.clip(np.asarray(pixels), 0, 255).astype(np.uint16).reshape(-1, 3) * HISTOGRAM_LEVELS // 256
    bins = (pixels[:, 0] * HISTOGRAM_LEVELS + pixels[:, 1]) * HISTOGRAM_LEVELS + pixels[:, 2]
    counts = np.bincount(bins, minlength=HISTOGRAM_LEVELS ** 3).astype(np.float32)
    return counts / max(counts.sum(), 1.0)
