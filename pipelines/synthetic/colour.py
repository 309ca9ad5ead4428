"""Colour arithmetic for the synthetic posters: RGB triples, shading, mixing, hue jitter."""
from __future__ import annotations

import colorsys

import numpy as np

RGB = tuple[int, int, int]


def shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(max(0, min(255, c * factor))) for c in colour)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


def rgba(colour: RGB, alpha: int) -> tuple[int, int, int, int]:
    return (*colour, int(alpha))


def jitter_colour(colour: RGB, hue: float, saturation: float, value: float) -> RGB:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in colour))
    r, g, b = colorsys.hsv_to_rgb((h + hue) % 1.0, min(1.0, s * saturation), min(1.0, v * value))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def random_bright(rng: np.random.Generator) -> RGB:
    return jitter_colour((255, 0, 0), float(rng.random()), 1.0, 1.0)
