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

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

from pipelines.synthetic.colour import RGB, jitter_colour, mix, random_bright, rgba, shade
from pipelines.synthetic.motifs import BACKDROP_MOTIFS, FOREGROUND_MOTIFS


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


def _jittered_style(style: GenreStyle, rng: np.random.Generator) -> GenreStyle:
    """The same style with its whole palette hue-shifted and scaled a little, per title."""
    hue, sat, val = rng.uniform(-0.05, 0.05), rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.15)
    recolour = functools.partial(jitter_colour, hue=hue, saturation=sat, value=val)
    return replace(style, sky=recolour(style.sky), ground=recolour(style.ground), accent=recolour(style.accent),
                   ink=recolour(style.ink), title=recolour(style.title))


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
        body = random_bright(rng)
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
    colour = rgba(mix(style.title, style.sky, 0.4), 170)
    for line in range(int(rng.integers(1, 3))):
        y, x = h * (0.965 + 0.014 * line), w * rng.uniform(0.12, 0.2)
        while x < w * rng.uniform(0.78, 0.88):
            word = w * rng.uniform(0.02, 0.07)
            draw.rectangle([x, y, x + word, y + max(1, h * 0.006)], fill=colour)
            x += word + w * 0.012


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
