"""Drawing of synthetic movie posters whose look carries their genres, the way real posters do.

Each genre has a `GenreStyle`: a palette, a lighting scheme, a layout (one big figure, a couple, an ensemble,
a portrait…), headwear for its figures, where and how the title is lettered, and recurring motifs (horror's
moon and eyes, sci-fi's stars and planets, western's sun on the horizon…). The primary genre (listed first)
sets palette, lighting, layout and lettering; each secondary genre adds one of its motifs in its own accent
colour and tints the background. Per-title randomness (hue shift, composition, flips, crop, grain) keeps the
genre learnable without being readable off one pixel. Shapes are large so the signal survives a 64×64 resize.

`render_poster(genres, title, rng, width, height)` is the one entry point; everything is drawn with PIL and
numpy from the given `numpy.random.Generator`, so the same generator state gives the same pixels.
"""
from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class GenreStyle:
    sky: RGB  # background at the top / outside the glow
    ground: RGB  # background at the bottom / inside the glow
    accent: RGB  # motifs
    ink: RGB  # figure silhouettes
    title: RGB  # title lettering
    lighting: str  # vertical | diagonal | radial_glow | split
    vignette: float  # 0 (flat) … 0.7 (dark edges)
    layout: str  # figure | lone | duo | ensemble | portrait | mascot | none
    headwear: str  # none | cowboy | fedora | helmet | crown
    title_at: str  # top | bottom
    lettering: str  # block (chunky scaled bitmap capitals) | thin (spaced vector capitals)
    motifs: tuple[str, ...]


GENRE_STYLES: dict[str, GenreStyle] = {
    "Action": GenreStyle((20, 24, 38), (235, 110, 30), (255, 175, 40), (12, 12, 16), (255, 235, 200),
                         "vertical", 0.35, "figure", "none", "bottom", "block", ("burst", "streaks")),
    "Adventure": GenreStyle((60, 150, 175), (220, 180, 95), (250, 225, 140), (45, 40, 35), (255, 245, 215),
                            "vertical", 0.15, "lone", "none", "top", "block", ("mountains", "compass")),
    "Animation": GenreStyle((125, 60, 235), (40, 225, 230), (255, 230, 40), (255, 90, 160), (255, 255, 255),
                            "diagonal", 0.0, "mascot", "none", "top", "block", ("bubbles", "sparkles")),
    "Biography": GenreStyle((205, 190, 165), (120, 95, 70), (240, 225, 195), (50, 40, 35), (45, 32, 25),
                            "radial_glow", 0.25, "portrait", "none", "bottom", "thin", ("frame", "film_strip")),
    "Comedy": GenreStyle((255, 225, 40), (255, 250, 235), (230, 40, 40), (40, 40, 70), (225, 30, 30),
                         "vertical", 0.0, "ensemble", "none", "top", "block", ("halo", "confetti")),
    "Crime": GenreStyle((14, 14, 18), (70, 70, 80), (240, 200, 30), (5, 5, 5), (240, 200, 30),
                        "vertical", 0.4, "figure", "fedora", "bottom", "thin", ("skyline", "tape")),
    "Documentary": GenreStyle((150, 160, 150), (95, 105, 100), (205, 205, 195), (60, 65, 60), (245, 245, 240),
                              "vertical", 0.1, "none", "none", "bottom", "thin", ("photo", "globe")),
    "Drama": GenreStyle((40, 55, 85), (150, 160, 175), (215, 205, 185), (20, 25, 35), (240, 240, 240),
                        "radial_glow", 0.3, "lone", "none", "bottom", "thin", ("window", "rain")),
    "Family": GenreStyle((120, 200, 245), (110, 205, 90), (255, 220, 80), (60, 70, 120), (255, 255, 255),
                         "vertical", 0.0, "ensemble", "none", "top", "block", ("hills", "balloons")),
    "Fantasy": GenreStyle((55, 20, 95), (235, 185, 95), (255, 235, 160), (25, 10, 40), (255, 225, 140),
                          "radial_glow", 0.3, "figure", "none", "top", "thin", ("castle", "sparkles")),
    "History": GenreStyle((125, 30, 25), (205, 165, 95), (235, 205, 135), (40, 20, 15), (240, 215, 150),
                          "vertical", 0.35, "figure", "crown", "bottom", "thin", ("columns", "banners")),
    "Horror": GenreStyle((5, 5, 8), (95, 5, 12), (235, 230, 205), (0, 0, 0), (205, 12, 22),
                         "vertical", 0.6, "lone", "none", "top", "block", ("moon", "eyes", "drips")),
    "Music": GenreStyle((22, 5, 32), (205, 30, 145), (80, 240, 255), (10, 0, 15), (255, 255, 255),
                        "radial_glow", 0.3, "figure", "none", "bottom", "block", ("notes", "waves")),
    "Musical": GenreStyle((135, 10, 28), (250, 210, 110), (255, 240, 185), (40, 5, 10), (255, 220, 120),
                          "radial_glow", 0.25, "ensemble", "none", "top", "thin", ("curtains", "spotlights")),
    "Mystery": GenreStyle((25, 30, 62), (115, 125, 145), (205, 215, 235), (10, 12, 25), (220, 225, 240),
                          "vertical", 0.45, "figure", "fedora", "bottom", "thin", ("fog", "keyhole")),
    "Romance": GenreStyle((250, 165, 180), (255, 215, 170), (230, 50, 95), (120, 40, 60), (255, 255, 255),
                          "radial_glow", 0.1, "duo", "none", "top", "thin", ("hearts", "bokeh")),
    "Sci-Fi": GenreStyle((5, 10, 42), (20, 165, 225), (125, 240, 255), (5, 10, 25), (180, 240, 255),
                         "vertical", 0.3, "figure", "none", "top", "block", ("stars", "planet", "grid")),
    "Sport": GenreStyle((30, 95, 205), (40, 165, 60), (255, 255, 255), (15, 20, 40), (255, 255, 255),
                        "diagonal", 0.1, "figure", "none", "bottom", "block", ("ball", "track")),
    "Thriller": GenreStyle((10, 25, 30), (75, 115, 120), (230, 230, 220), (5, 8, 10), (240, 240, 240),
                           "split", 0.4, "portrait", "none", "bottom", "thin", ("crosshair", "shards")),
    "War": GenreStyle((95, 100, 68), (62, 56, 45), (190, 180, 150), (30, 30, 25), (222, 212, 180),
                      "vertical", 0.35, "ensemble", "helmet", "bottom", "block", ("smoke", "wire")),
    "Western": GenreStyle((245, 160, 70), (125, 62, 30), (255, 222, 120), (40, 20, 10), (60, 25, 10),
                          "vertical", 0.2, "figure", "cowboy", "top", "block", ("sun_horizon", "cactus")),
}


OFF_PALETTE_RATE = 0.12  # share of posters whose background leans to another genre's palette


# --- colour -------------------------------------------------------------------------------------------------
def shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(max(0, min(255, c * factor))) for c in colour)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


def _rgba(colour: RGB, alpha: int) -> tuple[int, int, int, int]:
    return (*colour, int(alpha))


def jitter_colour(colour: RGB, hue: float, saturation: float, value: float) -> RGB:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in colour))
    r, g, b = colorsys.hsv_to_rgb((h + hue) % 1.0, min(1.0, s * saturation), min(1.0, v * value))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _jittered_style(style: GenreStyle, rng: np.random.Generator) -> GenreStyle:
    """The same style with its whole palette hue-shifted and scaled a little, per title."""
    hue, sat, val = rng.uniform(-0.05, 0.05), rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.15)
    recolour = functools.partial(jitter_colour, hue=hue, saturation=sat, value=val)
    return replace(style, sky=recolour(style.sky), ground=recolour(style.ground), accent=recolour(style.accent),
                   ink=recolour(style.ink), title=recolour(style.title))


def _random_bright(rng: np.random.Generator) -> RGB:
    return jitter_colour((255, 0, 0), float(rng.random()), 1.0, 1.0)


# --- lighting -----------------------------------------------------------------------------------------------
def _light_fields(style: GenreStyle, rng: np.random.Generator, width: int, height: int):
    """Colour mix `t` (0 → sky, 1 → ground) and brightness multiplier on a coarse grid (smooth fields)."""
    gw, gh = max(8, width // 10), max(12, height // 10)
    x = np.linspace(0.0, 1.0, gw, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, gh, dtype=np.float32)[:, None]
    light = np.ones((gh, gw), np.float32)
    if style.lighting == "vertical":
        t = np.broadcast_to(y ** rng.uniform(0.7, 1.4), (gh, gw))
    elif style.lighting == "diagonal":
        angle = rng.uniform(0.4, 1.2) if rng.random() < 0.5 else rng.uniform(1.9, 2.7)
        t = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle) * 1.5
        t = (t - t.min()) / (t.max() - t.min())
    elif style.lighting == "radial_glow":
        cx, cy, radius = rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.6), rng.uniform(0.5, 0.8)
        t = np.clip(1.0 - np.hypot(x - cx, (y - cy) * 1.5) / radius, 0.0, 1.0)
    else:  # split: one side lit, the other in shadow, lighting the figure too
        side = x if rng.random() < 0.5 else 1.0 - x
        t = np.broadcast_to(1.0 / (1.0 + np.exp(-(side - rng.uniform(0.4, 0.6)) * 12.0)), (gh, gw))
        light = light * (0.35 + 0.65 * t)
    edge = np.hypot((x - 0.5) * 2.0, (y - 0.5) * 2.0) / math.sqrt(2.0)
    light = light * (1.0 - style.vignette * rng.uniform(0.8, 1.2) * edge ** 2)
    return t, np.clip(light, 0.0, 1.0)


def _background(style: GenreStyle, t: np.ndarray, width: int, height: int) -> Image.Image:
    sky, ground = np.array(style.sky, np.float32), np.array(style.ground, np.float32)
    coarse = sky * (1.0 - t[..., None]) + ground * t[..., None]
    image = Image.fromarray(coarse.round().astype(np.uint8), "RGB")
    return image.resize((width, height), Image.BILINEAR)


def _apply_light(image: Image.Image, light: np.ndarray) -> Image.Image:
    mask = Image.fromarray((light * 255).astype(np.uint8), "L").resize(image.size, Image.BILINEAR)
    return ImageChops.multiply(image, Image.merge("RGB", (mask, mask, mask)))


@functools.lru_cache(maxsize=4)
def _grain_tile(width: int, height: int) -> Image.Image:
    """A fixed film-grain tile (Gaussian around 128) twice the poster size; each poster takes a random window."""
    tile = np.random.default_rng(20240601).standard_normal((height * 2, width * 2), dtype=np.float32)
    return Image.fromarray((128 + tile * 24).clip(0, 255).astype(np.uint8), "L")


def _add_grain(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Adds monochrome grain of standard deviation ≈ 24·strength grey levels (C-speed: ImageChops, no numpy)."""
    width, height = image.size
    x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
    window = _grain_tile(width, height).crop((x0, y0, x0 + width, y0 + height))
    grain = window.point([int(round(128 + (v - 128) * strength)) for v in range(256)])
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), scale=1.0, offset=-128)


# --- figures ------------------------------------------------------------------------------------------------
def _person(draw: ImageDraw.ImageDraw, cx: float, base: float, tall: float, colour, headwear: str) -> None:
    """A standing silhouette `tall` pixels high, feet at `base`."""
    r = 0.085 * tall
    head_y = base - tall + r
    draw.ellipse([cx - r, head_y - r, cx + r, head_y + r], fill=colour)
    neck, hips, shoulder, hip = head_y + r, base - 0.47 * tall, 0.17 * tall, 0.11 * tall
    draw.ellipse([cx - shoulder, neck, cx + shoulder, neck + 0.12 * tall], fill=colour)
    draw.polygon([(cx - shoulder, neck + 0.06 * tall), (cx + shoulder, neck + 0.06 * tall),
                  (cx + hip, hips), (cx - hip, hips)], fill=colour)
    for sign in (-1, 1):  # arms, then legs
        draw.polygon([(cx + sign * shoulder, neck + 0.05 * tall), (cx + sign * (shoulder + 0.05 * tall), hips),
                      (cx + sign * (shoulder - 0.01 * tall), hips + 0.02 * tall),
                      (cx + sign * (shoulder - 0.06 * tall), neck + 0.1 * tall)], fill=colour)
        draw.polygon([(cx + sign * 0.01 * tall, hips), (cx + sign * hip, hips),
                      (cx + sign * (hip + 0.03 * tall), base), (cx + sign * 0.02 * tall, base)], fill=colour)
    _headwear(draw, cx, head_y, r, colour, headwear)


def _headwear(draw: ImageDraw.ImageDraw, cx: float, head_y: float, r: float, colour, headwear: str) -> None:
    if headwear == "cowboy":
        draw.ellipse([cx - 2.6 * r, head_y - 0.75 * r, cx + 2.6 * r, head_y - 0.2 * r], fill=colour)
        draw.rounded_rectangle([cx - 1.1 * r, head_y - 1.9 * r, cx + 1.1 * r, head_y - 0.4 * r], r * 0.4, colour)
    elif headwear == "fedora":
        draw.rectangle([cx - 1.8 * r, head_y - 0.75 * r, cx + 1.8 * r, head_y - 0.45 * r], fill=colour)
        draw.rectangle([cx - 1.0 * r, head_y - 1.7 * r, cx + 1.0 * r, head_y - 0.5 * r], fill=colour)
    elif headwear == "helmet":
        draw.pieslice([cx - 1.4 * r, head_y - 1.5 * r, cx + 1.4 * r, head_y + 0.9 * r], 180, 360, fill=colour)
    elif headwear == "crown":
        points = [(cx - r, head_y - 0.7 * r)]
        for i in range(5):
            points += [(cx - r + (i + 0.5) * 0.4 * r, head_y - 2.0 * r), (cx - r + (i + 1) * 0.4 * r, head_y - 1.2 * r)]
        draw.polygon(points + [(cx + r, head_y - 0.7 * r)], fill=colour)


def _draw_layout(draw, style: GenreStyle, rng: np.random.Generator, w: int, h: int) -> None:
    ink, layout = style.ink, style.layout
    if layout == "figure":
        _person(draw, w * rng.uniform(0.35, 0.65), h * rng.uniform(0.9, 1.05), h * rng.uniform(0.55, 0.72),
                ink, style.headwear)
    elif layout == "lone":
        _person(draw, w * rng.uniform(0.3, 0.7), h * rng.uniform(0.78, 0.9), h * rng.uniform(0.16, 0.26),
                ink, style.headwear)
    elif layout == "duo":
        cx, tall = w * rng.uniform(0.42, 0.58), h * rng.uniform(0.48, 0.62)
        _person(draw, cx - 0.13 * w, h * 1.0, tall, ink, style.headwear)
        _person(draw, cx + 0.13 * w, h * 1.0, tall * 0.93, ink, style.headwear)
    elif layout == "ensemble":
        count = int(rng.integers(3, 6))
        for i in np.argsort(rng.random(count)):
            cx = w * (0.12 + 0.76 * (i + rng.uniform(0.3, 0.7)) / count)
            _person(draw, cx, h * rng.uniform(0.92, 1.02), h * rng.uniform(0.3, 0.45), ink, style.headwear)
    elif layout == "portrait":
        cx, cy, r = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.38, 0.48), w * rng.uniform(0.2, 0.26)
        draw.ellipse([cx - 2.1 * r, cy + 1.0 * r, cx + 2.1 * r, cy + 4.2 * r], fill=ink)
        draw.rectangle([cx - 0.45 * r, cy + 0.5 * r, cx + 0.45 * r, cy + 1.6 * r], fill=ink)
        draw.ellipse([cx - 0.85 * r, cy - 1.1 * r, cx + 0.85 * r, cy + 1.1 * r], fill=ink)
    elif layout == "mascot":
        cx, cy, r = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.5, 0.62), w * rng.uniform(0.25, 0.32)
        body = _random_bright(rng)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=body, outline=shade(body, 0.5), width=max(2, w // 80))
        for sign in (-1, 1):
            ex, ey, er = cx + sign * 0.38 * r, cy - 0.2 * r, 0.26 * r
            draw.ellipse([ex - er, ey - er * 1.3, ex + er, ey + er * 1.3], fill=(255, 255, 255))
            draw.ellipse([ex - er * 0.45, ey - er * 0.3, ex + er * 0.45, ey + er * 0.7], fill=(15, 15, 15))
        draw.arc([cx - 0.5 * r, cy - 0.1 * r, cx + 0.5 * r, cy + 0.6 * r], 20, 160, fill=(40, 10, 10),
                 width=max(2, w // 60))


# --- title lettering ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _bitmap_font() -> ImageFont.ImageFont:
    return ImageFont.load_default_imagefont()


@functools.lru_cache(maxsize=64)
def _vector_font(size: int):
    return ImageFont.load_default(size=size)


def _wrap(title: str, max_lines: int = 2) -> list[str]:
    words = title.split()
    if len(words) < 2 or len(title) <= 14:
        return [title]
    best = min(range(1, len(words)), key=lambda k: abs(len(" ".join(words[:k])) - len(" ".join(words[k:]))))
    return [" ".join(words[:best]), " ".join(words[best:])][:max_lines]


def _title_mask(style: GenreStyle, title: str, width: int) -> Image.Image:
    """An L-mode mask of the lettered title, at most ~90% of the poster wide."""
    lines = _wrap(title.upper())
    if style.lettering == "block":  # the bitmap font scaled up with NEAREST: chunky block capitals
        font = _bitmap_font()
        line_w = max(font.getbbox(line)[2] for line in lines) + 1
        small = Image.new("L", (line_w, 12 * len(lines)), 0)
        for i, line in enumerate(lines):
            ImageDraw.Draw(small).text((0, 12 * i), line, fill=255, font=font)
        scale = max(1, min(6, int(0.9 * width / line_w)))
        return small.resize((line_w * scale, small.height * scale), Image.NEAREST)
    spaced = [" ".join(line) for line in lines]  # thin: letter-spaced vector capitals
    longest = max(spaced, key=len)
    size = max(8, min(int(width * 0.075), int(0.9 * width / max(1, 0.55 * len(longest)))))
    font = _vector_font(size)
    left, top, right, bottom = font.getbbox(longest)
    while right - left > 0.92 * width and size > 8:
        size -= 2
        font = _vector_font(size)
        left, top, right, bottom = font.getbbox(longest)
    line_h = int(size * 1.2)
    mask = Image.new("L", (right - left + 2, line_h * len(spaced) + 2), 0)
    for i, line in enumerate(spaced):
        line_w = font.getbbox(line)[2]
        ImageDraw.Draw(mask).text(((mask.width - line_w) // 2, line_h * i - top), line, fill=255, font=font)
    return mask


def _draw_title(image: Image.Image, style: GenreStyle, title: str, rng: np.random.Generator) -> None:
    width, height = image.size
    mask = _title_mask(style, title, width)
    x = int((width - mask.width) // 2 + rng.integers(-width // 40, width // 40 + 1))
    if style.title_at == "top":
        y = int(height * rng.uniform(0.04, 0.09))
    else:
        y = int(height * rng.uniform(0.9, 0.95)) - mask.height
    offset = max(1, width // 120)
    image.paste(shade(style.title, 0.2), (x + offset, y + offset), mask)
    image.paste(style.title, (x, y), mask)


def _billing_block(draw, style: GenreStyle, rng: np.random.Generator, w: int, h: int) -> None:
    """The small credits lines at the foot of a poster: texture that says 'poster' to the model, not genre."""
    colour = _rgba(mix(style.title, style.sky, 0.4), 170)
    for line in range(int(rng.integers(1, 3))):
        y, x = h * (0.965 + 0.014 * line), w * rng.uniform(0.12, 0.2)
        while x < w * rng.uniform(0.78, 0.88):
            word = w * rng.uniform(0.02, 0.07)
            draw.rectangle([x, y, x + word, y + max(1, h * 0.006)], fill=colour)
            x += word + w * 0.012


# --- motifs -------------------------------------------------------------------------------------------------
# Each draws onto an RGBA-blending ImageDraw of a w×h poster: (draw, rng, w, h, colour, style) -> None.
# Sizes are fractions of the poster so the big shapes survive a resize to 64×64.
def _disc(draw, cx, cy, r, fill, outline=None, width=1):
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=width)


def _star(cx, cy, outer, inner, points, turn=0.0):
    angles = np.linspace(0, 2 * math.pi, 2 * points, endpoint=False) + turn
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii)]


def _heart(cx, cy, size):
    t = np.linspace(0, 2 * math.pi, 28, endpoint=False)
    x, y = 16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return [(cx + size * a / 32, cy - size * b / 32) for a, b in zip(x, y)]


def moon(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.25, 0.75), h * rng.uniform(0.14, 0.3), w * rng.uniform(0.14, 0.22)
    _disc(draw, cx, cy, r * 1.35, _rgba(colour, 45))
    _disc(draw, cx, cy, r, colour)
    for _ in range(3):
        _disc(draw, cx + r * rng.uniform(-0.5, 0.5), cy + r * rng.uniform(-0.5, 0.5), r * rng.uniform(0.08, 0.2),
              _rgba(shade(colour, 0.8), 160))


def eyes(draw, rng, w, h, colour, style):
    glow = (230, 25, 20) if sum(colour) > 600 else colour
    for _ in range(int(rng.integers(1, 4))):
        cx, cy, r = w * rng.uniform(0.2, 0.8), h * rng.uniform(0.35, 0.65), w * rng.uniform(0.025, 0.045)
        for sign in (-1, 1):
            ex = cx + sign * r * 2.2
            draw.ellipse([ex - r * 1.8, cy - r * 1.4, ex + r * 1.8, cy + r * 1.4], fill=_rgba(glow, 70))
            draw.ellipse([ex - r, cy - r * 0.55, ex + r, cy + r * 0.55], fill=glow)


def drips(draw, rng, w, h, colour, style):
    blood = (170, 5, 10) if sum(colour) > 600 else colour
    draw.rectangle([0, 0, w, h * 0.025], fill=blood)
    for x in np.sort(rng.uniform(0, w, int(rng.integers(6, 12)))):
        width, length = w * rng.uniform(0.015, 0.035), h * rng.uniform(0.04, 0.2)
        draw.rectangle([x - width / 2, 0, x + width / 2, length], fill=blood)
        _disc(draw, x, length, width * 0.75, blood)


def stars(draw, rng, w, h, colour, style):
    count = int(rng.integers(50, 110))
    xs, ys, rs = rng.uniform(0, w, count), rng.uniform(0, h * 0.7, count), rng.uniform(0.6, 2.2, count)
    for x, y, r in zip(xs, ys, rs):
        _disc(draw, x, y, r, _rgba(colour, 220))
    for _ in range(int(rng.integers(3, 6))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h * 0.6), w * rng.uniform(0.02, 0.045)
        draw.polygon(_star(x, y, r, r * 0.25, 4), fill=colour)


def planet(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.2, 0.8), h * rng.uniform(0.15, 0.4), w * rng.uniform(0.16, 0.28)
    body = mix(colour, style.sky, 0.35)
    _disc(draw, cx, cy, r, body)
    draw.chord([cx - r, cy - r, cx + r, cy + r], 200, 380, fill=_rgba(shade(body, 0.55), 200))
    draw.ellipse([cx - 1.8 * r, cy - 0.35 * r, cx + 1.8 * r, cy + 0.35 * r], outline=colour, width=max(2, w // 70))


def grid(draw, rng, w, h, colour, style):
    horizon, vx = h * rng.uniform(0.58, 0.7), w * rng.uniform(0.35, 0.65)
    line = _rgba(colour, 190)
    for k in range(-8, 9):
        draw.line([(vx, horizon), (vx + k * w * 0.22, h)], fill=line, width=max(1, w // 150))
    y, step = horizon, h * 0.012
    while y < h:
        draw.line([(0, y), (w, y)], fill=line, width=max(1, w // 150))
        step *= 1.45
        y += step


def sun_horizon(draw, rng, w, h, colour, style):
    horizon, cx, r = h * rng.uniform(0.56, 0.7), w * rng.uniform(0.3, 0.7), w * rng.uniform(0.24, 0.34)
    _disc(draw, cx, horizon, r * 1.25, _rgba(colour, 60))
    draw.pieslice([cx - r, horizon - r, cx + r, horizon + r], 180, 360, fill=colour)
    ground = shade(style.ground, 0.6)
    draw.rectangle([0, horizon, w, h], fill=ground)
    for _ in range(int(rng.integers(1, 3))):  # mesas
        x, top, span = w * rng.uniform(-0.1, 0.9), horizon - h * rng.uniform(0.04, 0.1), w * rng.uniform(0.2, 0.4)
        draw.polygon([(x, horizon), (x + span * 0.15, top), (x + span * 0.85, top), (x + span, horizon)],
                     fill=shade(ground, 0.8))


def cactus(draw, rng, w, h, colour, style):
    ink = mix(style.ink, colour, 0.15)
    for _ in range(int(rng.integers(1, 3))):
        side, base, tall = rng.uniform(0.05, 0.25), h, h * rng.uniform(0.2, 0.35)
        x = w * (side if rng.random() < 0.5 else 1.0 - side)  # cacti stand near the edges
        arm = tall * 0.09
        draw.rounded_rectangle([x - arm, base - tall, x + arm, base], arm, ink)
        for sign, at in ((-1, 0.45), (1, 0.6)):
            ax = x + sign * arm * 3
            draw.rounded_rectangle([min(x, ax) - arm * 0.7, base - tall * at, max(x, ax) + arm * 0.7,
                                    base - tall * at + arm * 1.4], arm * 0.7, ink)
            draw.rounded_rectangle([ax - arm * 0.7, base - tall * (at + 0.25), ax + arm * 0.7, base - tall * at + arm],
                                   arm * 0.7, ink)


def hearts(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(3, 8))):
        x, y, size = w * rng.uniform(0.1, 0.9), h * rng.uniform(0.1, 0.75), w * rng.uniform(0.07, 0.22)
        draw.polygon(_heart(x, y, size), fill=_rgba(colour, int(rng.integers(150, 256))))


def bokeh(draw, rng, w, h, colour, style):
    light = mix(colour, (255, 255, 255), 0.5)
    for _ in range(int(rng.integers(8, 16))):
        _disc(draw, w * rng.uniform(0, 1), h * rng.uniform(0, 0.8), w * rng.uniform(0.03, 0.09), _rgba(light, 90))


def streaks(draw, rng, w, h, colour, style):
    slope = rng.uniform(0.5, 1.2) * (1 if rng.random() < 0.5 else -1)
    for _ in range(int(rng.integers(5, 10))):
        x, y, length = w * rng.uniform(-0.2, 1.2), h * rng.uniform(0, 1), w * rng.uniform(0.3, 0.8)
        draw.line([(x, y), (x + length, y - slope * length)], fill=_rgba(colour, int(rng.integers(120, 230))),
                  width=int(w * rng.uniform(0.008, 0.03)))


def burst(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.35, 0.6), w * rng.uniform(0.35, 0.5)
    points, turn = int(rng.integers(11, 18)), rng.uniform(0, math.pi)
    draw.polygon(_star(cx, cy, r, r * 0.55, points, turn), fill=_rgba(colour, 220))
    core = _rgba(mix(colour, (255, 250, 220), 0.6), 235)
    draw.polygon(_star(cx, cy, r * 0.6, r * 0.35, points, turn + 0.2), fill=core)


def confetti(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(40, 80))):
        x, y, s = rng.uniform(0, w), rng.uniform(0, h), w * rng.uniform(0.01, 0.025)
        piece = colour if rng.random() < 0.4 else _random_bright(rng)
        draw.polygon(_star(x, y, s, s, 2, rng.uniform(0, math.pi)), fill=piece)


def halo(draw, rng, w, h, colour, style):
    _disc(draw, w * rng.uniform(0.4, 0.6), h * rng.uniform(0.5, 0.65), w * rng.uniform(0.38, 0.5),
          _rgba((255, 255, 255), 200), outline=colour, width=max(3, w // 40))


def skyline(draw, rng, w, h, colour, style):
    base, x = h, -w * rng.uniform(0, 0.1)
    dark = mix(style.ink, style.sky, 0.3)
    while x < w:
        bw, bh = w * rng.uniform(0.08, 0.18), h * rng.uniform(0.15, 0.45)
        draw.rectangle([x, base - bh, x + bw, base], fill=dark)
        for wy in np.arange(base - bh + h * 0.02, base - h * 0.02, h * 0.035):
            for wx in np.arange(x + bw * 0.15, x + bw * 0.8, bw * 0.3):
                if rng.random() < 0.35:
                    draw.rectangle([wx, wy, wx + bw * 0.12, wy + h * 0.012], fill=_rgba(colour, 200))
        x += bw + w * rng.uniform(0, 0.02)


def tape(draw, rng, w, h, colour, style):
    y, tilt, band = h * rng.uniform(0.55, 0.8), h * rng.uniform(-0.15, 0.15), h * rng.uniform(0.045, 0.07)
    draw.polygon([(0, y), (w, y + tilt), (w, y + tilt + band), (0, y + band)], fill=colour)
    for x in np.arange(w * 0.05, w, w * 0.16):
        top = y + tilt * x / w + band * 0.3
        draw.rectangle([x, top, x + w * 0.09, top + band * 0.4], fill=(10, 10, 10))


def photo(draw, rng, w, h, colour, style):
    x0, y0 = w * rng.uniform(0.08, 0.16), h * rng.uniform(0.12, 0.22)
    x1, y1 = w - w * rng.uniform(0.08, 0.16), y0 + h * rng.uniform(0.35, 0.5)
    draw.rectangle([x0, y0, x1, y1], fill=mix(colour, style.ground, 0.5), outline=(245, 245, 240),
                   width=max(3, w // 50))
    horizon = y0 + (y1 - y0) * rng.uniform(0.4, 0.7)
    draw.rectangle([x0 + 4, horizon, x1 - 4, y1 - 4], fill=mix(style.ink, style.ground, 0.4))


def globe(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.45, 0.7), w * rng.uniform(0.18, 0.26)
    line = max(2, w // 90)
    _disc(draw, cx, cy, r, _rgba(colour, 70), outline=colour, width=line)
    for k in (0.35, 0.7):
        draw.ellipse([cx - r * k, cy - r, cx + r * k, cy + r], outline=colour, width=line)
    for k in (-0.5, 0, 0.5):
        half = r * math.sqrt(1 - k * k)
        draw.line([(cx - half, cy + k * r), (cx + half, cy + k * r)], fill=colour, width=line)


def window(draw, rng, w, h, colour, style):
    x0, y0 = w * rng.uniform(0.15, 0.35), h * rng.uniform(0.08, 0.2)
    x1, y1 = x0 + w * rng.uniform(0.35, 0.5), y0 + h * rng.uniform(0.3, 0.42)
    draw.rectangle([x0, y0, x1, y1], fill=_rgba(mix(colour, (255, 255, 255), 0.3), 190))
    bar = max(3, w // 45)
    draw.rectangle([(x0 + x1) / 2 - bar / 2, y0, (x0 + x1) / 2 + bar / 2, y1], fill=style.sky)
    draw.rectangle([x0, (y0 + y1) / 2 - bar / 2, x1, (y0 + y1) / 2 + bar / 2], fill=style.sky)


def rain(draw, rng, w, h, colour, style):
    count = int(rng.integers(60, 120))
    xs, ys, ls = rng.uniform(0, w, count), rng.uniform(0, h, count), rng.uniform(0.03, 0.08, count) * h
    for x, y, length in zip(xs, ys, ls):
        draw.line([(x, y), (x - length * 0.15, y + length)], fill=_rgba(colour, 110), width=1)


def hills(draw, rng, w, h, colour, style):
    for k, tone in ((0, 0.85), (1, 1.0)):
        cx, top = w * rng.uniform(0.1, 0.9), h * rng.uniform(0.62, 0.72) + k * h * 0.06
        draw.ellipse([cx - w * 0.9, top, cx + w * 0.9, top + h * 0.6], fill=shade(style.ground, tone))
    _disc(draw, w * rng.uniform(0.15, 0.85), h * rng.uniform(0.1, 0.2), w * rng.uniform(0.08, 0.12), colour)


def balloons(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(3, 7))):
        x, y, r = w * rng.uniform(0.1, 0.9), h * rng.uniform(0.12, 0.5), w * rng.uniform(0.04, 0.07)
        tint = colour if rng.random() < 0.4 else _random_bright(rng)
        draw.line([(x, y + r * 1.2), (x + rng.uniform(-r, r), y + r * 4)], fill=(90, 90, 90), width=1)
        draw.ellipse([x - r, y - r * 1.2, x + r, y + r * 1.2], fill=tint)


def castle(draw, rng, w, h, colour, style):
    dark, base = mix(style.ink, style.sky, 0.25), h * rng.uniform(0.62, 0.72)
    cx, span = w * rng.uniform(0.35, 0.65), w * rng.uniform(0.5, 0.75)
    draw.rectangle([cx - span / 2, base - h * 0.12, cx + span / 2, base + h], fill=dark)
    for k in np.linspace(-0.5, 0.5, int(rng.integers(3, 6))):
        tx, top, tw = cx + k * span, base - h * rng.uniform(0.2, 0.35), w * 0.05
        draw.rectangle([tx - tw, top, tx + tw, base], fill=dark)
        draw.polygon([(tx - tw * 1.3, top), (tx + tw * 1.3, top), (tx, top - h * 0.08)], fill=dark)
        draw.rectangle([tx - tw * 0.25, top + h * 0.03, tx + tw * 0.25, top + h * 0.05], fill=colour)


def sparkles(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(6, 14))):
        x, y, r = w * rng.uniform(0.05, 0.95), h * rng.uniform(0.05, 0.8), w * rng.uniform(0.015, 0.05)
        draw.polygon(_star(x, y, r, r * 0.2, 4), fill=_rgba(colour, 230))


def columns(draw, rng, w, h, colour, style):
    count, top, base = int(rng.integers(3, 5)), h * rng.uniform(0.12, 0.2), h * rng.uniform(0.75, 0.85)
    stone = _rgba(colour, 170)
    for x in np.linspace(w * 0.1, w * 0.9, count):
        cw = w * 0.045
        draw.rectangle([x - cw, top, x + cw, base], fill=stone)
        draw.rectangle([x - cw * 1.6, top - h * 0.02, x + cw * 1.6, top + h * 0.01], fill=stone)
        draw.rectangle([x - cw * 1.6, base - h * 0.01, x + cw * 1.6, base + h * 0.02], fill=stone)
    draw.rectangle([0, top - h * 0.06, w, top - h * 0.02], fill=stone)


def banners(draw, rng, w, h, colour, style):
    for x in rng.uniform(0.1, 0.9, int(rng.integers(2, 4))) * w:
        bw, length = w * 0.07, h * rng.uniform(0.25, 0.4)
        draw.polygon([(x - bw, 0), (x + bw, 0), (x + bw, length), (x, length - bw), (x - bw, length)],
                     fill=mix(colour, (150, 20, 20), 0.5))


def notes(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(3, 7))):
        x, y, r = w * rng.uniform(0.1, 0.85), h * rng.uniform(0.12, 0.7), w * rng.uniform(0.03, 0.06)
        draw.ellipse([x - r * 1.3, y - r, x + r * 1.3, y + r], fill=colour)
        draw.rectangle([x + r * 1.0, y - r * 5, x + r * 1.35, y], fill=colour)
        draw.polygon([(x + r * 1.35, y - r * 5), (x + r * 2.6, y - r * 3.4), (x + r * 1.35, y - r * 3.8)], fill=colour)


def waves(draw, rng, w, h, colour, style):
    xs = np.linspace(0, w, 60)
    for _ in range(int(rng.integers(2, 5))):
        y0, amp, freq = h * rng.uniform(0.55, 0.85), h * rng.uniform(0.02, 0.06), rng.uniform(2, 5)
        ys = y0 + amp * np.sin(xs / w * freq * 2 * math.pi + rng.uniform(0, 6.3))
        draw.line(list(zip(xs, ys)), fill=_rgba(colour, 200), width=max(2, w // 60))


def curtains(draw, rng, w, h, colour, style):
    red, inner = mix(style.sky, (160, 10, 30), 0.5), w * rng.uniform(0.18, 0.28)
    for left in (True, False):
        edge = inner if left else w - inner
        outer = 0 if left else w
        draw.polygon([(outer, 0), (edge, 0), (edge * 0.6 + outer * 0.4, h * 0.7), (outer, h)], fill=red)
        for k in np.linspace(0.2, 0.8, 4):
            x = outer + (edge - outer) * k
            draw.line([(x, 0), (x * 0.8 + outer * 0.2, h * 0.8)], fill=shade(red, 0.6), width=max(2, w // 80))
    draw.rectangle([0, 0, w, h * 0.07], fill=shade(red, 0.8))
    for x in np.linspace(0, w, 9):
        draw.pieslice([x - w * 0.07, h * 0.03, x + w * 0.07, h * 0.11], 0, 180, fill=shade(red, 0.8))


def spotlights(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(2, 4))):
        x, target, spread = w * rng.uniform(0, 1), w * rng.uniform(0.25, 0.75), w * rng.uniform(0.12, 0.2)
        draw.polygon([(x - w * 0.02, 0), (x + w * 0.02, 0), (target + spread, h), (target - spread, h)],
                     fill=_rgba(colour, 70))


def fog(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(4, 8))):
        y, span = h * rng.uniform(0.45, 0.95), w * rng.uniform(0.6, 1.2)
        x = w * rng.uniform(-0.3, 0.7)
        draw.ellipse([x, y - h * 0.04, x + span, y + h * 0.04], fill=_rgba(colour, 70))


def keyhole(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.25, 0.4), w * rng.uniform(0.09, 0.13)
    _disc(draw, cx, cy, r, _rgba(colour, 220))
    draw.polygon([(cx - r * 0.5, cy), (cx + r * 0.5, cy), (cx + r * 0.9, cy + r * 2.6), (cx - r * 0.9, cy + r * 2.6)],
                 fill=_rgba(colour, 220))


def compass(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.25, 0.75), h * rng.uniform(0.25, 0.45), w * rng.uniform(0.12, 0.18)
    _disc(draw, cx, cy, r, _rgba(colour, 60), outline=colour, width=max(3, w // 60))
    draw.polygon(_star(cx, cy, r * 0.9, r * 0.18, 4, rng.uniform(0, 0.8)), fill=colour)


def frame(draw, rng, w, h, colour, style):
    cx, cy = w * 0.5, h * rng.uniform(0.4, 0.48)
    draw.ellipse([cx - w * 0.4, cy - h * 0.3, cx + w * 0.4, cy + h * 0.3], outline=colour, width=max(4, w // 30))


def film_strip(draw, rng, w, h, colour, style):
    x = w * (rng.uniform(0.02, 0.06) if rng.random() < 0.5 else rng.uniform(0.82, 0.86))
    strip = w * 0.12
    draw.rectangle([x, 0, x + strip, h], fill=(25, 22, 20))
    for y in np.arange(h * 0.01, h, h * 0.035):
        draw.rectangle([x + strip * 0.15, y, x + strip * 0.3, y + h * 0.015], fill=colour)
        draw.rectangle([x + strip * 0.7, y, x + strip * 0.85, y + h * 0.015], fill=colour)


def crosshair(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.55), w * rng.uniform(0.22, 0.32)
    line = max(2, w // 70)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=line)
    draw.line([(cx - r * 1.3, cy), (cx - r * 0.2, cy)], fill=colour, width=line)
    draw.line([(cx + r * 0.2, cy), (cx + r * 1.3, cy)], fill=colour, width=line)
    draw.line([(cx, cy - r * 1.3), (cx, cy - r * 0.2)], fill=colour, width=line)
    draw.line([(cx, cy + r * 0.2), (cx, cy + r * 1.3)], fill=colour, width=line)


def shards(draw, rng, w, h, colour, style):
    cx, cy = w * rng.uniform(0.2, 0.8), h * rng.uniform(0.2, 0.7)
    for angle in rng.uniform(0, 2 * math.pi, int(rng.integers(6, 11))):
        length = w * rng.uniform(0.4, 0.9)
        mid = (cx + math.cos(angle) * length * 0.5 + rng.normal(0, w * 0.03), cy + math.sin(angle) * length * 0.5)
        draw.line([(cx, cy), mid, (cx + math.cos(angle) * length, cy + math.sin(angle) * length)],
                  fill=_rgba(colour, 200), width=max(2, w // 100))


def smoke(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(6, 12))):
        _disc(draw, w * rng.uniform(-0.1, 1.1), h * rng.uniform(0.35, 0.8), w * rng.uniform(0.12, 0.25),
              _rgba(colour, int(rng.integers(50, 110))))


def wire(draw, rng, w, h, colour, style):
    dark = mix(style.ink, colour, 0.2)
    for y in h * rng.uniform(0.72, 0.92, int(rng.integers(1, 3))):
        xs = np.arange(0, w + w * 0.1, w * 0.1)
        zigzag = [(x, y + (h * 0.01 if i % 2 else -h * 0.01)) for i, x in enumerate(xs)]
        draw.line(zigzag, fill=dark, width=max(2, w // 90))
        for x in xs[::2]:
            draw.line([(x - w * 0.02, y - h * 0.015), (x + w * 0.02, y + h * 0.015)], fill=dark, width=2)
            draw.line([(x - w * 0.02, y + h * 0.015), (x + w * 0.02, y - h * 0.015)], fill=dark, width=2)


def ball(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.2, 0.8), h * rng.uniform(0.15, 0.4), w * rng.uniform(0.12, 0.2)
    line = max(2, w // 80)
    _disc(draw, cx, cy, r, colour, outline=(20, 20, 20), width=line)
    draw.arc([cx - r * 1.6, cy - r, cx + r * 0.4, cy + r], -60, 60, fill=(20, 20, 20), width=line)
    draw.arc([cx - r * 0.4, cy - r, cx + r * 1.6, cy + r], 120, 240, fill=(20, 20, 20), width=line)


def track(draw, rng, w, h, colour, style):
    horizon, vx = h * rng.uniform(0.6, 0.72), w * rng.uniform(0.3, 0.7)
    draw.polygon([(vx - w * 0.05, horizon), (vx + w * 0.05, horizon), (w * 1.3, h), (-w * 0.3, h)],
                 fill=_rgba((200, 80, 50), 170))
    for k in np.linspace(-1, 1, 7):
        draw.line([(vx + k * w * 0.05, horizon), (vx + k * w * 0.8, h)], fill=colour, width=max(2, w // 100))


def mountains(draw, rng, w, h, colour, style):
    for k, tone in ((0, 0.75), (1, 0.55)):
        base, x = h * (0.72 + 0.08 * k), -w * 0.2
        points = [(x, base)]
        while x < w * 1.2:
            x += w * rng.uniform(0.15, 0.35)
            points.append((x, base - h * rng.uniform(0.12, 0.3)))
            x += w * rng.uniform(0.1, 0.25)
            points.append((x, base - h * rng.uniform(0.0, 0.08)))
        draw.polygon(points + [(x, h), (-w * 0.2, h)], fill=shade(mix(style.sky, style.ink, 0.4), tone))
    draw.polygon(_star(w * rng.uniform(0.2, 0.8), h * rng.uniform(0.12, 0.25), w * 0.04, w * 0.04, 2), fill=colour)


def bubbles(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(8, 15))):
        x, y, r = w * rng.uniform(0, 1), h * rng.uniform(0, 0.9), w * rng.uniform(0.03, 0.1)
        _disc(draw, x, y, r, _random_bright(rng))
        _disc(draw, x - r * 0.35, y - r * 0.35, r * 0.25, (255, 255, 255))


# Backdrop motifs are drawn behind the figures, foreground motifs in front of them.
BACKDROP_MOTIFS = {
    "moon": moon, "stars": stars, "planet": planet, "grid": grid, "sun_horizon": sun_horizon, "skyline": skyline,
    "mountains": mountains, "hills": hills, "window": window, "curtains": curtains, "columns": columns,
    "photo": photo, "halo": halo, "castle": castle, "spotlights": spotlights, "track": track, "globe": globe,
    "banners": banners, "compass": compass, "keyhole": keyhole, "burst": burst, "balloons": balloons,
}
FOREGROUND_MOTIFS = {
    "eyes": eyes, "drips": drips, "streaks": streaks, "confetti": confetti, "hearts": hearts, "bokeh": bokeh,
    "notes": notes, "waves": waves, "bubbles": bubbles, "sparkles": sparkles, "rain": rain, "tape": tape,
    "crosshair": crosshair, "shards": shards, "smoke": smoke, "wire": wire, "ball": ball, "frame": frame,
    "film_strip": film_strip, "cactus": cactus, "fog": fog,
}
MOTIFS = {**BACKDROP_MOTIFS, **FOREGROUND_MOTIFS}
assert all(name in MOTIFS for style in GENRE_STYLES.values() for name in style.motifs)


# --- composition --------------------------------------------------------------------------------------------
def _blended_style(genres: list[str], rng: np.random.Generator) -> tuple[GenreStyle, list[GenreStyle]]:
    """The primary genre's jittered style, tinted by the secondary genres (returned too, for their motifs)."""
    style = _jittered_style(GENRE_STYLES[genres[0]], rng)
    secondary = [_jittered_style(GENRE_STYLES[g], rng) for g in genres[1:]]
    for other in secondary:
        style = replace(style, ground=mix(style.ground, other.ground, 0.3), sky=mix(style.sky, other.sky, 0.15))
    if rng.random() < OFF_PALETTE_RATE:  # some posters break their genre's colour conventions, as real ones do
        stray = GENRE_STYLES[list(GENRE_STYLES)[int(rng.integers(len(GENRE_STYLES)))]]
        style = replace(style, ground=mix(style.ground, stray.ground, 0.6), sky=mix(style.sky, stray.sky, 0.6))
    return style, secondary


def _motif_plan(style: GenreStyle, secondary: list[GenreStyle], rng: np.random.Generator) -> list[tuple[str, RGB]]:
    """(motif, colour) pairs: usually two of the primary genre's motifs, and one per secondary genre."""
    keep = min(2 if rng.random() < 0.75 else 1, len(style.motifs))
    plan = [(style.motifs[i], style.accent) for i in sorted(rng.choice(len(style.motifs), keep, replace=False))]
    return plan + [(other.motifs[int(rng.integers(len(other.motifs)))], other.accent) for other in secondary]


def render_poster(genres: list[str], title: str, rng: np.random.Generator, width: int = 300,
                  height: int = 450) -> Image.Image:
    """A `width`×`height` RGB poster for `genres` (first = primary), drawn from `rng` alone."""
    style, secondary = _blended_style(genres, rng)
    t, light = _light_fields(style, rng, width, height)
    image = _background(style, t, width, height)
    draw = ImageDraw.Draw(image, "RGBA")  # RGBA fills blend into the RGB poster
    plan = _motif_plan(style, secondary, rng)
    for name, colour in plan:
        if name in BACKDROP_MOTIFS:
            BACKDROP_MOTIFS[name](draw, rng, width, height, colour, style)
    _draw_layout(draw, style, rng, width, height)
    for name, colour in plan:
        if name in FOREGROUND_MOTIFS:
            FOREGROUND_MOTIFS[name](draw, rng, width, height, colour, style)

    image = _apply_light(image, light)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    scale = rng.uniform(0.88, 1.0)  # random crop and rescale of the art: composition is not on a fixed grid
    cw, ch = width * scale, height * scale
    x0, y0 = rng.uniform(0, width - cw), rng.uniform(0, height - ch)
    image = image.resize((width, height), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    _draw_title(image, style, title, rng)
    _billing_block(ImageDraw.Draw(image, "RGBA"), style, rng, width, height)
    return _add_grain(image, rng, rng.uniform(0.12, 0.35))
