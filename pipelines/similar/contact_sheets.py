"""`posters similar` and `posters mix`: the seed's two pictures, drawn from the published index.

    posters similar TITLE [-k 10] --index URI --catalog URI --out grid.png
    posters mix TITLE_A TITLE_B [...] [-k 10] --index URI --catalog URI --out mix.png

`similar` is the "top 10 most similar" figure: the query poster, then its k nearest neighbours (itself
excluded). `mix` is the "averaged embedding" figure: the posters given, then the k nearest neighbours of the
normalised average of their embeddings (the inputs excluded). Query vectors come from the index itself; titles
and posters from the catalog manifest. TITLE is a title_id, or a title when exactly one matches.
"""
from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from pipelines.candidates.pipeline import top_k_excluding
from pipelines.candidates.watch_history import weighted_query
from pipelines.common import storage
from pipelines.common.catalog import CatalogError
from pipelines.common.command_line import command_parser, parse_command
from pipelines.common.posters import fetch_poster
from pipelines.config import HttpConfig
from pipelines.embed.reader import EmbeddingsError

POSTER_SIZE = (150, 225)
CAPTION_HEIGHT = 36
GAP = 10
HEADING_HEIGHT = 34
COLUMNS = 5
BACKGROUND, INK, MUTED, ACCENT = (250, 250, 248), (25, 25, 25), (110, 110, 110), (214, 80, 40)


@dataclass(frozen=True)
class Tile:
    """One poster of a contact sheet and the two caption lines under it."""

    poster_uri: Optional[str]
    title: str
    note: str  # e.g. "#3  0.874" or "query"


# --- finding the neighbours ------------------------------------------------------------------------------------
def similar_titles(index, title_id: str, k: int) -> list[tuple[str, float]]:
    """The k nearest titles to `title_id` in `index` (a `ShardedIndex`), itself excluded: (title_id, score)."""
    return neighbours_of(index, index.vector(title_id)[None, :], {title_id}, k)


def mix_query(vectors: np.ndarray) -> np.ndarray:
    """The normalised average of unit vectors [n, d] (the seed's "averaged embedding")."""
    query = weighted_query(vectors, np.ones(len(vectors)))
    if query is None:
        raise ValueError("these posters' embeddings cancel out: their average is zero")
    return query


def mixed_titles(index, title_ids: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The k nearest titles to the average of the titles' embeddings, the titles themselves excluded."""
    return neighbours_of(index, mix_query(index.vectors(list(title_ids)))[None, :], set(title_ids), k)


def neighbours_of(index, query: np.ndarray, exclude: set, k: int) -> list[tuple[str, float]]:
    title_ids, scores = index.search(query.astype(np.float32), k + len(exclude))
    return [(n["title_id"], n["score"]) for n in top_k_excluding(title_ids[0], scores[0], frozenset(exclude), k)]


def resolve_title(key: str, catalog: dict) -> str:
    """A title_id from `key`: a title_id of the catalog, or the one title whose name matches (case-insensitive)."""
    if key in catalog:
        return key
    matches = sorted(tid for tid, row in catalog.items() if row.title.casefold() == key.casefold())
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"{len(matches)} titles are called {key!r} ({', '.join(matches[:5])}); give a title_id")
    raise ValueError(f"{key!r} is neither a title_id nor a title of the catalog")


# --- drawing ---------------------------------------------------------------------------------------------------
def _font(size: int):
    return ImageFont.load_default(size=size)


def _fit(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _poster(uri: Optional[str], http: HttpConfig | None = None) -> Image.Image:
    """The poster (any URI `fetch_poster` reads) fitted into POSTER_SIZE; a grey card saying so when it cannot be
    read."""
    card = Image.new("RGB", POSTER_SIZE, (200, 200, 200))
    try:
        with Image.open(io.BytesIO(fetch_poster(uri, http or HttpConfig()).data)) as image:
            fitted = ImageOps.contain(image.convert("RGB"), POSTER_SIZE)
        card.paste(fitted, ((POSTER_SIZE[0] - fitted.width) // 2, (POSTER_SIZE[1] - fitted.height) // 2))
    except Exception:  # noqa: BLE001 — a picture with one missing poster is still worth drawing
        ImageDraw.Draw(card).text((10, POSTER_SIZE[1] // 2), "poster unreadable", fill=INK, font=_font(12))
    return card


def _draw_tile(sheet: Image.Image, tile: Tile, x: int, y: int, highlight: bool, http: HttpConfig) -> None:
    draw = ImageDraw.Draw(sheet)
    if highlight:
        draw.rectangle([x - 4, y - 4, x + POSTER_SIZE[0] + 3, y + POSTER_SIZE[1] + 3], fill=ACCENT)
    sheet.paste(_poster(tile.poster_uri, http), (x, y))
    title_font, note_font = _font(13), _font(12)
    draw.text((x, y + POSTER_SIZE[1] + 4), _fit(tile.title, draw, title_font, POSTER_SIZE[0]), fill=INK,
              font=title_font)
    draw.text((x, y + POSTER_SIZE[1] + 20), tile.note, fill=MUTED, font=note_font)


def contact_sheet(heading: str, queries: Sequence[Tile], neighbours: Sequence[Tile],
                  columns: int = COLUMNS, http: HttpConfig | None = None) -> Image.Image:
    """The query posters in a highlighted first row, then the neighbours, `columns` per row, under a heading."""
    cell_w, cell_h = POSTER_SIZE[0] + GAP, POSTER_SIZE[1] + CAPTION_HEIGHT + GAP
    columns = max(columns, len(queries))
    rows = 1 + -(-len(neighbours) // columns)
    sheet = Image.new("RGB", (GAP + columns * cell_w, HEADING_HEIGHT + GAP + rows * cell_h), BACKGROUND)
    ImageDraw.Draw(sheet).text((GAP, 8), heading, fill=INK, font=_font(18))
    top, http = HEADING_HEIGHT + GAP, http or HttpConfig()
    for i, tile in enumerate(queries):
        _draw_tile(sheet, tile, GAP + i * cell_w, top, highlight=True, http=http)
    for i, tile in enumerate(neighbours):
        row, column = divmod(i, columns)
        _draw_tile(sheet, tile, GAP + column * cell_w, top + (row + 1) * cell_h, highlight=False, http=http)
    return sheet


def neighbour_tiles(ranked: Sequence[tuple[str, float]], catalog: dict) -> list[Tile]:
    return [_tile(title_id, f"#{rank}  score {score:.3f}", catalog) for rank, (title_id, score) in
            enumerate(ranked, start=1)]


def _tile(title_id: str, note: str, catalog: dict) -> Tile:
    row = catalog.get(title_id)
    return Tile(row.poster_uri if row else None, row.title if row and row.title else title_id, note)


def save_png(image: Image.Image, uri: str) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    storage.write_bytes(uri, buffer.getvalue())


# --- commands --------------------------------------------------------------------------------------------------
def _parse(name: str, description: str, argv: list[str], min_titles: int, max_titles: Optional[int]):
    parser = command_parser(name, description)
    parser.add_argument("titles", nargs="+", metavar="TITLE", help="title_id (or a title that names one title)")
    parser.add_argument("-k", type=int, default=10, help="neighbours to show (default: %(default)s)")
    parser.add_argument("--index", required=True, help="published index root (with CURRENT) or a version dir")
    parser.add_argument("--catalog", required=True, help="catalog manifest, for titles and posters")
    parser.add_argument("--out", required=True, help="PNG to write (local path or gs://)")
    args, config, extra = parse_command(parser, argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if len(args.titles) < min_titles or len(args.titles) > (max_titles or len(args.titles)):
        parser.error(f"give {'one TITLE' if max_titles == 1 else f'at least {min_titles} TITLEs'}")
    if args.k < 1:
        parser.error("-k must be positive")
    return args, config


def _load(args, config):
    from pipelines.common.catalog import read_catalog
    from pipelines.index.loader import load_index

    catalog = {row.title_id: row for row in read_catalog(args.catalog, config.catalog) if row.title_id}
    return catalog, load_index(args.index)


def _draw_command(name: str, description: str, argv: list[str], min_titles: int,
                  max_titles: Optional[int]) -> int:
    from pipelines.index.loader import IndexLoadError  # imports faiss: only when a command runs

    args, config = _parse(name, description, argv, min_titles, max_titles)
    try:
        catalog, index = _load(args, config)
        title_ids = [resolve_title(key, catalog) for key in args.titles]
        ranked = (similar_titles(index, title_ids[0], args.k) if name == "similar"
                  else mixed_titles(index, title_ids, args.k))
    except (KeyError, ValueError, CatalogError, EmbeddingsError, IndexLoadError, FileNotFoundError) as err:
        # Inputs the user must fix: one line and exit 1 (exit 2 is argparse's, for bad usage).
        print(f"posters {name}: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 1
    names = " + ".join(repr(catalog[t].title or t) for t in title_ids)
    heading = (f"{names}: the {len(ranked)} most similar posters" if name == "similar"
               else f"mix of {names}: neighbours of the averaged embedding")
    queries = [_tile(t, "query" if name == "similar" else "mixed", catalog) for t in title_ids]
    save_png(contact_sheet(heading, queries, neighbour_tiles(ranked, catalog), http=config.http), args.out)
    print(f"{heading} (index {index.version}) → {args.out}")
    for rank, (title_id, score) in enumerate(ranked, start=1):
        print(f"  {rank:>2}. {score:.3f}  {title_id}  {catalog[title_id].title if title_id in catalog else ''}")
    return 0


def similar_main(argv: list[str]) -> int:
    return _draw_command("similar", "contact sheet of a poster and its nearest neighbours", argv, 1, 1)


def mix_main(argv: list[str]) -> int:
    return _draw_command("mix", "contact sheet of the neighbours of averaged posters", argv, 2, None)
