"""`posters generate-catalog`: the embedded synthetic poster catalog (JPEG posters + manifest + sidecars).

    posters generate-catalog --out DIR --n N --seed S [--bad-fraction F] [--duplicate-fraction F]
                             [--preview sheet.png]

writes under DIR:
  posters/<title_id>.jpg    N posters drawn by `pipelines.synthetic.art`, whose look carries their genres
  catalog.csv               the manifest contract: title_id,title,genres (`|`-joined, primary first),poster_uri
                            (relative to the manifest)
  bad_rows.json             every deliberately broken row: {"title_id", "kind", "expected"}, where `expected`
                            is the `RejectReason` a validator must give, or "accepted" (it must convert)
  duplicates.json           titles whose poster is a copy of an earlier title's (as real catalogs hold the same
                            poster under several titles): {"title_id", "copy_of", "kind"}, kind `identical`
                            (the same bytes) or `reencoded` (resized by 4 % and saved again at JPEG quality 70)
  catalog_summary.json      n, seed, genre counts, bad counts by kind, timings

Genres follow the skew and co-occurrence of public movie data (Drama and Comedy most common; Horror with
Thriller, Animation with Family, …). Everything is a function of the seed: each title draws from its own
`numpy.random.Generator` seeded by (seed, index), so the same seed gives byte-identical output.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import struct
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipelines.contracts import CATALOG_COLUMNS, RejectReason
from pipelines.synthetic.art import GENRE_STYLES, render_poster

GENRES = ("Action", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary", "Drama", "Family",
          "Fantasy", "History", "Horror", "Music", "Musical", "Mystery", "Romance", "Sci-Fi", "Sport", "Thriller",
          "War", "Western")
assert set(GENRES) == set(GENRE_STYLES), "every genre needs a poster style"

# How often each genre is a title's primary (first-listed) genre; the long tail is flattened a little so
# every genre has enough posters to learn from in a demo-sized catalog.
PRIMARY_GENRE_WEIGHTS = {
    "Drama": 20, "Comedy": 17, "Action": 8, "Horror": 6, "Crime": 5, "Documentary": 4, "Adventure": 4,
    "Animation": 3.5, "Biography": 3, "Thriller": 3.5, "Romance": 3, "Sci-Fi": 2.5, "Fantasy": 2.5,
    "Mystery": 2, "Family": 2, "Western": 2, "War": 2, "Music": 2, "Musical": 1.5, "History": 1.5, "Sport": 1.5,
}
# Companions of each genre (relative weights of the next listed genre), after public movie data.
GENRE_AFFINITY = {
    "Action": {"Adventure": 3, "Sci-Fi": 2, "Thriller": 2, "Crime": 2, "Comedy": 1, "Drama": 1, "Fantasy": 1,
               "War": 0.5, "Western": 0.3},
    "Adventure": {"Action": 3, "Fantasy": 2, "Family": 1.5, "Comedy": 1.5, "Sci-Fi": 1, "Drama": 1,
                  "Animation": 1, "Western": 0.5},
    "Animation": {"Family": 5, "Comedy": 3, "Adventure": 3, "Fantasy": 2, "Musical": 1, "Action": 0.5},
    "Biography": {"Drama": 5, "History": 2, "Music": 1, "Sport": 1, "Crime": 1, "Documentary": 0.5, "War": 0.5},
    "Comedy": {"Romance": 3, "Drama": 2.5, "Family": 1.5, "Crime": 1, "Adventure": 1, "Music": 0.7,
               "Musical": 0.5, "Fantasy": 0.5, "Horror": 0.5, "Animation": 0.5, "Sport": 0.5},
    "Crime": {"Drama": 4, "Thriller": 3.5, "Mystery": 1.5, "Action": 1.5, "Comedy": 1},
    "Documentary": {"Music": 2, "History": 2, "Biography": 2, "Sport": 1.5, "War": 1, "Drama": 0.5},
    "Drama": {"Romance": 3, "Crime": 2, "Comedy": 1.5, "Thriller": 1.5, "History": 1, "War": 1, "Biography": 1,
              "Mystery": 1, "Family": 0.7, "Sport": 0.6, "Music": 0.6},
    "Family": {"Animation": 3, "Comedy": 3, "Adventure": 2.5, "Fantasy": 2, "Drama": 1, "Musical": 0.5,
               "Sport": 0.5},
    "Fantasy": {"Adventure": 3, "Action": 1.5, "Family": 1.5, "Comedy": 1, "Horror": 1, "Romance": 1,
                "Drama": 1, "Animation": 1},
    "History": {"Drama": 4, "War": 3, "Biography": 2, "Romance": 1, "Adventure": 0.5},
    "Horror": {"Thriller": 5, "Mystery": 2.5, "Fantasy": 1, "Sci-Fi": 1, "Comedy": 0.7, "Drama": 0.7},
    "Music": {"Drama": 3, "Biography": 2, "Romance": 2, "Comedy": 1.5, "Documentary": 1, "Musical": 1},
    "Musical": {"Comedy": 3, "Romance": 3, "Drama": 2, "Family": 1.5, "Music": 1.5, "Fantasy": 0.5},
    "Mystery": {"Thriller": 4, "Crime": 3, "Drama": 2.5, "Horror": 2, "Sci-Fi": 0.5},
    "Romance": {"Drama": 5, "Comedy": 4, "Musical": 0.7, "Music": 0.7, "Fantasy": 0.5, "War": 0.3},
    "Sci-Fi": {"Action": 3, "Adventure": 2, "Thriller": 2, "Horror": 1.5, "Mystery": 1, "Drama": 1,
               "Fantasy": 0.5},
    "Sport": {"Drama": 4, "Biography": 2, "Comedy": 2, "Family": 1, "Documentary": 0.5},
    "Thriller": {"Crime": 3, "Mystery": 3, "Drama": 3, "Horror": 2.5, "Action": 2.5, "Sci-Fi": 1},
    "War": {"Drama": 4, "History": 3, "Action": 2.5, "Biography": 1, "Adventure": 0.5, "Romance": 0.5},
    "Western": {"Action": 2.5, "Drama": 2, "Adventure": 2, "Comedy": 1, "Romance": 0.5},
}
STRAY_COMPANION_WEIGHT = 0.02  # × primary weight: any genre can keep any other company, rarely
GENRE_COUNT_PROBABILITIES = (0.3, 0.42, 0.28)  # P(1 genre), P(2), P(3)

# Deliberately broken rows: kind → what a validator must do with it.
ACCEPTED = "accepted"
BAD_KIND_EXPECTED = {
    "zero_byte": RejectReason.ZERO_BYTES,
    "truncated": RejectReason.TRUNCATED_IMAGE,
    "not_an_image": RejectReason.NOT_AN_IMAGE,
    "tiny": RejectReason.TOO_SMALL,
    "huge_header": RejectReason.TOO_MANY_PIXELS,
    "missing_file": RejectReason.NO_POSTER,
    "wrong_extension": ACCEPTED,
    "grayscale": ACCEPTED,
    "cmyk": ACCEPTED,
    "alpha": ACCEPTED,
    "palette": ACCEPTED,
}
BAD_KINDS = tuple(BAD_KIND_EXPECTED)
TINY_SIZE = (20, 30)  # both sides under the default min_side (32)
# (format, declared width, declared height) of `huge_header` files, used in turn: a PNG far past PIL's own
# decompression-bomb limit, and a JPEG past the default max_pixels (40M) but under PIL's warning threshold
# (~89M), which only the project's own check catches.
HUGE_HEADERS = (("PNG", 30000, 30000), ("JPEG", 9000, 9000))

MANIFEST_FILE = "catalog.csv"
BAD_ROWS_FILE = "bad_rows.json"
SUMMARY_FILE = "catalog_summary.json"
DUPLICATES_FILE = "duplicates.json"
DUPLICATE_KINDS = ("identical", "reencoded")
POSTERS_DIR = "posters"
JPEG_QUALITY = 85
PREVIEW_COUNT = 24

_ADJECTIVES = ("Last", "Silent", "Broken", "Golden", "Crimson", "Endless", "Hidden", "Wild", "Lost", "Final",
               "Midnight", "Distant", "Little", "Burning", "Hollow", "Electric")
_PLACES = ("the Harbor", "Mesa Verde", "Brooklyn", "Saint-Étienne", "Kyoto", "the North", "Paradise Falls",
           "Caracas", "Málaga", "the Valley")
_NAMES = ("Ana", "Marco", "Zoë", "Walter", "Ingrid", "Kenji", "Amélie", "Tomás", "June", "Otis")
_GENRE_NOUNS = {
    "Action": ("Fury", "Strike", "Velocity", "Payback"), "Adventure": ("Expedition", "Map", "Voyage", "Summit"),
    "Animation": ("Critters", "Balloon", "Robot", "Puddle"), "Biography": ("Life", "Portrait", "Memoir", "Legacy"),
    "Comedy": ("Wedding", "Neighbours", "Mix-Up", "Holiday"), "Crime": ("Heist", "Alibi", "Racket", "Witness"),
    "Documentary": ("Record", "Field", "Archive", "Question"), "Drama": ("Silence", "Letters", "Winter", "Promise"),
    "Family": ("Treehouse", "Puppy", "Picnic", "Summer"), "Fantasy": ("Kingdom", "Spell", "Dragon", "Crown"),
    "History": ("Empire", "Treaty", "Dynasty", "Revolt"), "Horror": ("Hollow", "Whispers", "Cellar", "Hunger"),
    "Music": ("Encore", "Rhythm", "Record Deal", "Tour"), "Musical": ("Stage", "Chorus", "Curtain Call", "Song"),
    "Mystery": ("Riddle", "Keyhole", "Disappearance", "Cipher"), "Romance": ("Heart", "Kiss", "Affair", "Rendezvous"),
    "Sci-Fi": ("Orbit", "Signal", "Android", "Nebula"), "Sport": ("Champion", "Rematch", "Season", "Goal"),
    "Thriller": ("Target", "Deadline", "Pursuit", "Trap"), "War": ("Front", "Trench", "Battalion", "Siege"),
    "Western": ("Outlaw", "Frontier", "Gunslinger", "Canyon"),
}


# --- genres and titles --------------------------------------------------------------------------------------
def _probabilities(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


_PRIMARY_P = _probabilities(np.array([PRIMARY_GENRE_WEIGHTS[g] for g in GENRES], float))


def sample_genres(rng: np.random.Generator) -> list[str]:
    """1–3 distinct genres, primary first; each next genre is drawn by its affinity to those already chosen."""
    count = 1 + int(rng.choice(len(GENRE_COUNT_PROBABILITIES), p=GENRE_COUNT_PROBABILITIES))
    genres = [GENRES[int(rng.choice(len(GENRES), p=_PRIMARY_P))]]
    while len(genres) < count:
        weights = np.array([0.0 if g in genres else
                            sum(GENRE_AFFINITY[c].get(g, 0.0) for c in genres)
                            + STRAY_COMPANION_WEIGHT * PRIMARY_GENRE_WEIGHTS[g] for g in GENRES])
        genres.append(GENRES[int(rng.choice(len(GENRES), p=_probabilities(weights)))])
    return genres


def sample_title(rng: np.random.Generator, genres: list[str]) -> str:
    """A plausible title flavoured by the genres; some carry commas, quotes and accents (CSV quoting tests)."""
    def pick(options):
        return options[int(rng.integers(len(options)))]

    noun, other = pick(_GENRE_NOUNS[genres[0]]), pick(_GENRE_NOUNS[pick(genres)])
    templates = (
        lambda: f"The {pick(_ADJECTIVES)} {noun}",
        lambda: f"{noun} of {pick(_PLACES)}",
        lambda: f"{pick(_NAMES)}'s {noun}",
        lambda: f"{noun}, {other}" if noun != other else f"{noun}, Again",
        lambda: f"{pick(_ADJECTIVES)} {noun} {pick(('II', 'III', '2', 'Returns'))}",
        lambda: f"{pick(_NAMES)} & the {noun}",
        lambda: f'Say "{noun}"',
    )
    return pick(templates)()


# --- broken rows --------------------------------------------------------------------------------------------
def assign_bad_kinds(n: int, bad_fraction: float, seed: int) -> dict[int, str]:
    """Row index → bad kind for round(bad_fraction·n) random rows, kinds cycling in `BAD_KINDS` order."""
    count = min(n, int(round(bad_fraction * n)))
    rows = np.sort(np.random.default_rng([seed, 2]).permutation(n)[:count])
    return {int(row): BAD_KINDS[k % len(BAD_KINDS)] for k, row in enumerate(rows)}


def assign_duplicates(n: int, duplicate_fraction: float, seed: int, bad: dict[int, str]) -> dict[int, tuple[int, str]]:
    """Row index → (index of the earlier, unbroken title whose poster it copies, kind) for round(fraction·n) rows
    that are not broken, kinds alternating in `DUPLICATE_KINDS` order."""
    good = [i for i in range(1, n) if i not in bad]
    rng = np.random.default_rng([seed, 3])
    rows = sorted(rng.permutation(good)[:min(len(good), int(round(duplicate_fraction * n)))].tolist())
    copies = {}
    for k, row in enumerate(rows):
        sources = [i for i in range(row) if i not in bad and i not in copies]
        if sources:
            copies[row] = (sources[int(rng.integers(len(sources)))], DUPLICATE_KINDS[k % len(DUPLICATE_KINDS)])
    return copies


def copied_poster(original: bytes, kind: str) -> bytes:
    """A duplicate of an encoded poster: the same bytes, or the pixels resized by 4 % and saved as a new JPEG."""
    if kind == "identical":
        return original
    image = Image.open(io.BytesIO(original)).convert("RGB")
    resized = image.resize((round(image.width * 0.96), round(image.height * 0.96)), Image.BILINEAR)
    buffer = io.BytesIO()
    resized.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def _write_duplicates(out_dir: Path, rows: list[dict], copies: dict[int, tuple[int, str]]) -> list[dict]:
    listed = []
    for row, (source, kind) in sorted(copies.items()):
        original = (out_dir / rows[source]["poster_uri"]).read_bytes()
        (out_dir / rows[row]["poster_uri"]).write_bytes(copied_poster(original, kind))
        listed.append({"title_id": rows[row]["title_id"], "copy_of": rows[source]["title_id"], "kind": kind})
    _write_atomically(out_dir / DUPLICATES_FILE, json.dumps(listed, indent=1) + "\n")
    return listed


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header declares width×height but holds one row: tiny on disk, never decodable."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    first_row = zlib.compress(b"\x00" + bytes(3 * width), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", first_row) + chunk(b"IEND", b"")


def jpeg_declaring(jpeg: bytes, width: int, height: int) -> bytes:
    """`jpeg` with its start-of-frame segment rewritten to declare width×height (the scan data is unchanged)."""
    at = 2
    while at + 4 <= len(jpeg):
        assert jpeg[at] == 0xFF, "malformed JPEG marker walk"
        marker, length = jpeg[at + 1], struct.unpack(">H", jpeg[at + 2:at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            size = struct.pack(">HH", height, width)
            return jpeg[:at + 5] + size + jpeg[at + 9:]
        at += 2 + length
    raise AssertionError("no start-of-frame segment in JPEG")


def _not_an_image(title_id: str) -> bytes:
    return (f"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n<body><h1>Not Found</h1>"
            f"<p>The poster for {title_id} was not found on this server.</p></body></html>\n").encode()


def encode_poster(image: Optional[Image.Image], kind: Optional[str], title_id: str,
                  occurrence: int = 0) -> tuple[str, Optional[bytes]]:
    """(file suffix, file bytes) of a poster; `kind` breaks it on purpose, None bytes means no file at all.

    `occurrence` counts earlier rows of the same kind, to vary how a kind is broken across rows.
    """
    if kind is None:
        return ".jpg", _encode(image, "JPEG")
    if kind == "zero_byte":
        return ".jpg", b""
    if kind == "truncated":
        data = _encode(image, "JPEG")
        return ".jpg", data[:len(data) // 2]
    if kind == "not_an_image":
        return ".jpg", _not_an_image(title_id)
    if kind == "tiny":
        return ".jpg", _encode(image.resize(TINY_SIZE, Image.BILINEAR), "JPEG")
    if kind == "huge_header":
        fmt, width, height = HUGE_HEADERS[occurrence % len(HUGE_HEADERS)]
        if fmt == "PNG":
            return ".png", png_declaring(width, height)
        return ".jpg", jpeg_declaring(_encode(image, "JPEG"), width, height)
    if kind == "missing_file":
        return ".jpg", None
    if kind == "wrong_extension":
        return ".jpg", _encode(image, "PNG")
    if kind == "grayscale":
        return ".jpg", _encode(image.convert("L"), "JPEG")
    if kind == "cmyk":
        return ".jpg", _encode(image.convert("CMYK"), "JPEG")
    if kind == "alpha":
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(image.size).point(lambda v: 96 + v * 159 // 255))
        return ".png", _encode(rgba, "PNG")
    if kind == "palette":
        return ".png", _encode(image.convert("P", palette=Image.ADAPTIVE, colors=64), "PNG")
    raise ValueError(f"unknown bad kind {kind!r}; choose from {', '.join(BAD_KINDS)}")


_NEEDS_NO_PIXELS = {"zero_byte", "not_an_image", "missing_file"}


# --- preview ------------------------------------------------------------------------------------------------
def write_preview(path: Path, posters: list[tuple[Image.Image, list[str]]], columns: int = 6) -> None:
    """A contact sheet: each poster with its genres (primary first) written under it."""
    thumb_w, thumb_h, caption = 150, 225, 30
    rows = max(1, -(-len(posters) // columns))
    sheet = Image.new("RGB", (columns * thumb_w, rows * (thumb_h + caption)), (245, 245, 245))
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=11)
    for i, (image, genres) in enumerate(posters):
        x, y = (i % columns) * thumb_w, (i // columns) * (thumb_h + caption)
        sheet.paste(image.resize((thumb_w - 6, thumb_h - 6), Image.BILINEAR), (x + 3, y + 3))
        draw.text((x + 4, y + thumb_h), genres[0], fill=(20, 20, 20), font=font)
        draw.text((x + 4, y + thumb_h + 13), " · ".join(genres[1:]), fill=(110, 110, 110), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, "PNG")


# --- the catalog --------------------------------------------------------------------------------------------
def _check_arguments(n: int, bad_fraction: float, width: int, height: int) -> None:
    if n < 1:
        raise ValueError(f"--n must be at least 1 (got {n})")
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"--bad-fraction must be between 0 and 1 (got {bad_fraction})")
    if min(width, height) < 64:
        raise ValueError(f"--width and --height must be at least 64 pixels (got {width}×{height})")


def _write_atomically(path: Path, text: str) -> None:
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def _manifest_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CATALOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _preview_rows(n: int, bad: dict[int, str], count: int = PREVIEW_COUNT) -> set[int]:
    good = [i for i in range(n) if i not in bad]
    return {good[int(k)] for k in np.linspace(0, len(good) - 1, min(count, len(good)))} if good else set()


def write_title(out_dir: Path, seed: int, index: int, kind: Optional[str], occurrence: int, width: int,
                height: int) -> tuple[dict, Optional[Image.Image]]:
    """Draws and writes title number `index` (broken as `kind`, if any); returns its manifest row and poster."""
    rng = np.random.default_rng([seed, 1, index])  # one stream per title: rows do not depend on each other
    title_id, genres = f"tt{index + 1:07d}", sample_genres(rng)
    title = sample_title(rng, genres)
    image = None if kind in _NEEDS_NO_PIXELS else render_poster(genres, title, rng, width, height)
    suffix, data = encode_poster(image, kind, title_id, occurrence)
    path = out_dir / POSTERS_DIR / f"{title_id}{suffix}"
    if data is None:
        path.unlink(missing_ok=True)  # a rerun into the same folder must not leave the file behind
    else:
        path.write_bytes(data)
    row = {"title_id": title_id, "title": title, "genres": "|".join(genres), "poster_uri": f"{POSTERS_DIR}/{path.name}"}
    return row, image


def generate_catalog(out_dir, n: int, seed: int, bad_fraction: float = 0.0, width: int = 300, height: int = 450,
                     preview=None, progress: bool = False, duplicate_fraction: float = 0.0) -> dict:
    """Writes the catalog (posters, manifest, bad-row sidecar, summary) under `out_dir`; returns the summary."""
    _check_arguments(n, bad_fraction, width, height)
    if not 0.0 <= duplicate_fraction <= 1.0:
        raise ValueError(f"--duplicate-fraction must be between 0 and 1 (got {duplicate_fraction})")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / POSTERS_DIR).mkdir(parents=True, exist_ok=True)
    bad = assign_bad_kinds(n, bad_fraction, seed)
    sampled = _preview_rows(n, bad) if preview else set()
    rows, bad_rows, previews, occurrences = [], [], [], Counter()
    for index in range(n):
        kind = bad.get(index)
        row, image = write_title(out_dir, seed, index, kind, occurrences[kind], width, height)
        rows.append(row)
        if kind is not None:
            occurrences[kind] += 1
            bad_rows.append({"title_id": row["title_id"], "kind": kind, "expected": BAD_KIND_EXPECTED[kind]})
        if index in sampled:
            previews.append((image, row["genres"].split("|")))
        if progress and ((index + 1) % 200 == 0 or index + 1 == n):
            rate = (index + 1) / (time.perf_counter() - started)
            print(f"\rgenerate-catalog: {index + 1}/{n} posters ({rate:.0f}/s)", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)

    if preview:
        write_preview(Path(preview), previews)
    _write_atomically(out_dir / BAD_ROWS_FILE, json.dumps(bad_rows, indent=1) + "\n")
    duplicates = _write_duplicates(out_dir, rows, assign_duplicates(n, duplicate_fraction, seed, bad))
    _write_atomically(out_dir / MANIFEST_FILE, _manifest_text(rows))  # last: a reader never sees a partial one
    elapsed = time.perf_counter() - started
    summary = _summary(rows, bad_rows, n, seed, bad_fraction, width, height, elapsed, out_dir, preview)
    summary["duplicates"] = len(duplicates)
    _write_atomically(out_dir / SUMMARY_FILE, json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary


def _summary(rows, bad_rows, n, seed, bad_fraction, width, height, elapsed, out_dir, preview) -> dict:
    genre_counts = dict.fromkeys(GENRES, 0)
    primary_counts = dict.fromkeys(GENRES, 0)
    for row in rows:
        genres = row["genres"].split("|")
        primary_counts[genres[0]] += 1
        for genre in genres:
            genre_counts[genre] += 1
    bad_counts = dict.fromkeys(BAD_KINDS, 0)
    for row in bad_rows:
        bad_counts[row["kind"]] += 1
    return {
        "n": n, "seed": seed, "bad_fraction": bad_fraction, "width": width, "height": height,
        "genre_counts": genre_counts, "primary_genre_counts": primary_counts,
        "bad_counts": bad_counts, "bad_rows": len(bad_rows),
        "elapsed_seconds": round(elapsed, 3), "posters_per_second": round(n / elapsed, 1),
        "manifest": str(out_dir / MANIFEST_FILE), "preview": str(preview) if preview else None,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="posters generate-catalog",
                                     description="Write a synthetic poster catalog: JPEG posters + manifest.")
    parser.add_argument("--out", required=True, help="output folder (created; catalog.csv, posters/ go there)")
    parser.add_argument("--n", type=int, default=1000, help="number of titles (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    parser.add_argument("--bad-fraction", type=float, default=0.0,
                        help="fraction of rows deliberately broken, cycling through the bad kinds (default: 0)")
    parser.add_argument("--duplicate-fraction", type=float, default=0.0,
                        help="fraction of titles whose poster copies an earlier title's, byte-identical or "
                             "re-encoded (listed in duplicates.json; default: 0)")
    parser.add_argument("--preview", help="also write a contact sheet PNG of a sample of posters here")
    parser.add_argument("--width", type=int, default=300, help="poster width in pixels (default: 300)")
    parser.add_argument("--height", type=int, default=450, help="poster height in pixels (default: 450)")
    args = parser.parse_args(argv)
    try:
        summary = generate_catalog(args.out, args.n, args.seed, args.bad_fraction, args.width, args.height,
                                   args.preview, progress=True, duplicate_fraction=args.duplicate_fraction)
    except ValueError as error:
        print(f"posters generate-catalog: {error}", file=sys.stderr)
        return 2
    top = sorted(summary["genre_counts"].items(), key=lambda item: -item[1])[:5]
    print(f"wrote {summary['n']} titles ({summary['bad_rows']} deliberately broken) in "
          f"{summary['elapsed_seconds']:.1f}s ({summary['posters_per_second']:.0f} posters/s)"
          f" → {summary['manifest']}")
    print("most common genres: " + ", ".join(f"{genre} {count}" for genre, count in top))
    if summary["preview"]:
        print(f"preview: {summary['preview']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
