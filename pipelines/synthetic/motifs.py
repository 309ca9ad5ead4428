"""The recurring motifs of the synthetic posters (horror's moon and eyes, sci-fi's stars, western's sun…).

Each motif draws onto an RGBA-blending ImageDraw of a w×h poster: (draw, rng, w, h, colour, style) -> None,
where `style` is the poster's `poster_art.GenreStyle`. Sizes are fractions of the poster so the big shapes
survive a resize to 64×64.
"""
from __future__ import annotations

import math

import numpy as np

from pipelines.synthetic.colour import mix, random_bright, rgba, shade


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
    _disc(draw, cx, cy, r * 1.35, rgba(colour, 45))
    _disc(draw, cx, cy, r, colour)
    for _ in range(3):
        _disc(draw, cx + r * rng.uniform(-0.5, 0.5), cy + r * rng.uniform(-0.5, 0.5), r * rng.uniform(0.08, 0.2),
              rgba(shade(colour, 0.8), 160))


def eyes(draw, rng, w, h, colour, style):
    glow = (230, 25, 20) if sum(colour) > 600 else colour
    for _ in range(int(rng.integers(1, 4))):
        cx, cy, r = w * rng.uniform(0.2, 0.8), h * rng.uniform(0.35, 0.65), w * rng.uniform(0.025, 0.045)
        for sign in (-1, 1):
            ex = cx + sign * r * 2.2
            draw.ellipse([ex - r * 1.8, cy - r * 1.4, ex + r * 1.8, cy + r * 1.4], fill=rgba(glow, 70))
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
        _disc(draw, x, y, r, rgba(colour, 220))
    for _ in range(int(rng.integers(3, 6))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h * 0.6), w * rng.uniform(0.02, 0.045)
        draw.polygon(_star(x, y, r, r * 0.25, 4), fill=colour)


def planet(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.2, 0.8), h * rng.uniform(0.15, 0.4), w * rng.uniform(0.16, 0.28)
    body = mix(colour, style.sky, 0.35)
    _disc(draw, cx, cy, r, body)
    draw.chord([cx - r, cy - r, cx + r, cy + r], 200, 380, fill=rgba(shade(body, 0.55), 200))
    draw.ellipse([cx - 1.8 * r, cy - 0.35 * r, cx + 1.8 * r, cy + 0.35 * r], outline=colour, width=max(2, w // 70))


def grid(draw, rng, w, h, colour, style):
    horizon, vx = h * rng.uniform(0.58, 0.7), w * rng.uniform(0.35, 0.65)
    line = rgba(colour, 190)
    for k in range(-8, 9):
        draw.line([(vx, horizon), (vx + k * w * 0.22, h)], fill=line, width=max(1, w // 150))
    y, step = horizon, h * 0.012
    while y < h:
        draw.line([(0, y), (w, y)], fill=line, width=max(1, w // 150))
        step *= 1.45
        y += step


def sun_horizon(draw, rng, w, h, colour, style):
    horizon, cx, r = h * rng.uniform(0.56, 0.7), w * rng.uniform(0.3, 0.7), w * rng.uniform(0.24, 0.34)
    _disc(draw, cx, horizon, r * 1.25, rgba(colour, 60))
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
        draw.polygon(_heart(x, y, size), fill=rgba(colour, int(rng.integers(150, 256))))


def bokeh(draw, rng, w, h, colour, style):
    light = mix(colour, (255, 255, 255), 0.5)
    for _ in range(int(rng.integers(8, 16))):
        _disc(draw, w * rng.uniform(0, 1), h * rng.uniform(0, 0.8), w * rng.uniform(0.03, 0.09), rgba(light, 90))


def streaks(draw, rng, w, h, colour, style):
    slope = rng.uniform(0.5, 1.2) * (1 if rng.random() < 0.5 else -1)
    for _ in range(int(rng.integers(5, 10))):
        x, y, length = w * rng.uniform(-0.2, 1.2), h * rng.uniform(0, 1), w * rng.uniform(0.3, 0.8)
        draw.line([(x, y), (x + length, y - slope * length)], fill=rgba(colour, int(rng.integers(120, 230))),
                  width=int(w * rng.uniform(0.008, 0.03)))


def burst(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.35, 0.6), w * rng.uniform(0.35, 0.5)
    points, turn = int(rng.integers(11, 18)), rng.uniform(0, math.pi)
    draw.polygon(_star(cx, cy, r, r * 0.55, points, turn), fill=rgba(colour, 220))
    core = rgba(mix(colour, (255, 250, 220), 0.6), 235)
    draw.polygon(_star(cx, cy, r * 0.6, r * 0.35, points, turn + 0.2), fill=core)


def confetti(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(40, 80))):
        x, y, s = rng.uniform(0, w), rng.uniform(0, h), w * rng.uniform(0.01, 0.025)
        piece = colour if rng.random() < 0.4 else random_bright(rng)
        draw.polygon(_star(x, y, s, s, 2, rng.uniform(0, math.pi)), fill=piece)


def halo(draw, rng, w, h, colour, style):
    _disc(draw, w * rng.uniform(0.4, 0.6), h * rng.uniform(0.5, 0.65), w * rng.uniform(0.38, 0.5),
          rgba((255, 255, 255), 200), outline=colour, width=max(3, w // 40))


def skyline(draw, rng, w, h, colour, style):
    base, x = h, -w * rng.uniform(0, 0.1)
    dark = mix(style.ink, style.sky, 0.3)
    while x < w:
        bw, bh = w * rng.uniform(0.08, 0.18), h * rng.uniform(0.15, 0.45)
        draw.rectangle([x, base - bh, x + bw, base], fill=dark)
        for wy in np.arange(base - bh + h * 0.02, base - h * 0.02, h * 0.035):
            for wx in np.arange(x + bw * 0.15, x + bw * 0.8, bw * 0.3):
                if rng.random() < 0.35:
                    draw.rectangle([wx, wy, wx + bw * 0.12, wy + h * 0.012], fill=rgba(colour, 200))
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
    _disc(draw, cx, cy, r, rgba(colour, 70), outline=colour, width=line)
    for k in (0.35, 0.7):
        draw.ellipse([cx - r * k, cy - r, cx + r * k, cy + r], outline=colour, width=line)
    for k in (-0.5, 0, 0.5):
        half = r * math.sqrt(1 - k * k)
        draw.line([(cx - half, cy + k * r), (cx + half, cy + k * r)], fill=colour, width=line)


def window(draw, rng, w, h, colour, style):
    x0, y0 = w * rng.uniform(0.15, 0.35), h * rng.uniform(0.08, 0.2)
    x1, y1 = x0 + w * rng.uniform(0.35, 0.5), y0 + h * rng.uniform(0.3, 0.42)
    draw.rectangle([x0, y0, x1, y1], fill=rgba(mix(colour, (255, 255, 255), 0.3), 190))
    bar = max(3, w // 45)
    draw.rectangle([(x0 + x1) / 2 - bar / 2, y0, (x0 + x1) / 2 + bar / 2, y1], fill=style.sky)
    draw.rectangle([x0, (y0 + y1) / 2 - bar / 2, x1, (y0 + y1) / 2 + bar / 2], fill=style.sky)


def rain(draw, rng, w, h, colour, style):
    count = int(rng.integers(60, 120))
    xs, ys, ls = rng.uniform(0, w, count), rng.uniform(0, h, count), rng.uniform(0.03, 0.08, count) * h
    for x, y, length in zip(xs, ys, ls):
        draw.line([(x, y), (x - length * 0.15, y + length)], fill=rgba(colour, 110), width=1)


def hills(draw, rng, w, h, colour, style):
    for k, tone in ((0, 0.85), (1, 1.0)):
        cx, top = w * rng.uniform(0.1, 0.9), h * rng.uniform(0.62, 0.72) + k * h * 0.06
        draw.ellipse([cx - w * 0.9, top, cx + w * 0.9, top + h * 0.6], fill=shade(style.ground, tone))
    _disc(draw, w * rng.uniform(0.15, 0.85), h * rng.uniform(0.1, 0.2), w * rng.uniform(0.08, 0.12), colour)


def balloons(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(3, 7))):
        x, y, r = w * rng.uniform(0.1, 0.9), h * rng.uniform(0.12, 0.5), w * rng.uniform(0.04, 0.07)
        tint = colour if rng.random() < 0.4 else random_bright(rng)
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
        draw.polygon(_star(x, y, r, r * 0.2, 4), fill=rgba(colour, 230))


def columns(draw, rng, w, h, colour, style):
    count, top, base = int(rng.integers(3, 5)), h * rng.uniform(0.12, 0.2), h * rng.uniform(0.75, 0.85)
    stone = rgba(colour, 170)
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
        draw.line(list(zip(xs, ys)), fill=rgba(colour, 200), width=max(2, w // 60))


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
                     fill=rgba(colour, 70))


def fog(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(4, 8))):
        y, span = h * rng.uniform(0.45, 0.95), w * rng.uniform(0.6, 1.2)
        x = w * rng.uniform(-0.3, 0.7)
        draw.ellipse([x, y - h * 0.04, x + span, y + h * 0.04], fill=rgba(colour, 70))


def keyhole(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.25, 0.4), w * rng.uniform(0.09, 0.13)
    _disc(draw, cx, cy, r, rgba(colour, 220))
    draw.polygon([(cx - r * 0.5, cy), (cx + r * 0.5, cy), (cx + r * 0.9, cy + r * 2.6), (cx - r * 0.9, cy + r * 2.6)],
                 fill=rgba(colour, 220))


def compass(draw, rng, w, h, colour, style):
    cx, cy, r = w * rng.uniform(0.25, 0.75), h * rng.uniform(0.25, 0.45), w * rng.uniform(0.12, 0.18)
    _disc(draw, cx, cy, r, rgba(colour, 60), outline=colour, width=max(3, w // 60))
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
                  fill=rgba(colour, 200), width=max(2, w // 100))


def smoke(draw, rng, w, h, colour, style):
    for _ in range(int(rng.integers(6, 12))):
        _disc(draw, w * rng.uniform(-0.1, 1.1), h * rng.uniform(0.35, 0.8), w * rng.uniform(0.12, 0.25),
              rgba(colour, int(rng.integers(50, 110))))


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
                 fill=rgba((200, 80, 50), 170))
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
        _disc(draw, x, y, r, random_bright(rng))
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
