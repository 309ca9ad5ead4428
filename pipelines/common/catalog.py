"""The one catalog reader: a manifest (CSV, JSONL or Parquet; local or gs://) → `CatalogRow`s.

Every pipeline reads its catalog here, so column mapping, genre splitting and poster locations mean the same
thing everywhere. `read_catalog` is a plain function; `ReadCatalog` reads the same rows inside a pipeline, range by
range (`catalog_ranges`: byte ranges of a CSV or JSONL manifest cut where records start, row groups of a Parquet
one), the ranges spread over the workers so no process holds the catalog. Every pipeline validates the rows next
with `ValidateCatalogRows`, whose group by title_id applies the duplicate-title policy.

What the reader does *not* do is judge rows: a missing `title_id`, a duplicate or an empty genre list is
passed on as read (with its `row_number`) so the pipeline can reject it with a reason. Two things it does
find, and marks on the row as its `problem` for the pipeline to reject: a manifest line that does not parse as
one record (`malformed_record`: an unbalanced quote, a wrong number of fields, a line that is not JSON), and a
poster uri outside `catalog.allowed_roots` (`poster_outside_roots`). Every physical line of the manifest is
the header, a blank line, or part of exactly one row (`line_number`, `lines`): a malformed line is a row of its
own, never merged into the next ones, and `ManifestLines` counts the rest.

Genre names are normalised (`normalise_genre`) and spelled one way per manifest (`GenreNames`): Unicode NFKC,
invisible characters dropped, runs of spaces collapsed, dashes unified, aliases from `catalog.genre_aliases`,
and one spelling per case-folded name — the alias target, else the first spelling the manifest uses (each range
spells genres as it first sees them; `respelled` then applies the earliest spelling of all ranges).
"""
from __future__ import annotations

import dataclasses
import math
import os
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.common.catalog_ranges import (  # noqa: F401 — CatalogError is part of this module's API
    UNBOUNDED,
    CatalogError,
    ManifestRange,
    Record,
    plan_ranges,
    range_records,
)
from pipelines.config import CatalogConfig
from pipelines.contracts import CATALOG_COLUMNS, RejectReason

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".deflate")
# Inside a genres cell these always separate genres, whether configured or not: no genre name holds one.
ALWAYS_GENRE_SEPARATORS = ("\t", "\n", "\r", "\v", "\f")
METRICS_NAMESPACE = "catalog"
# Dashes and minus signs that NFKC leaves alone (category Pd, plus the minus signs, which are Sm).
_MINUS_SIGNS = {"\u2212", "\u207b", "\u208b"}


@dataclass(frozen=True)
class CatalogRow:
    title_id: str | None  # None when the manifest cell is empty; the pipeline rejects such rows
    title: str
    genres: tuple[str, ...]
    poster_uri: str | None  # absolute (local path or gs://…); None when the row names no poster
    row_number: int  # 1-based position among the manifest's data rows (not counting a CSV header)
    line_number: int = 0  # 1-based physical line of the manifest where the row starts (the header is line 1)
    lines: int = 1  # physical lines the row spans (a quoted CSV cell may hold line breaks)
    problem: Optional[tuple[str, str]] = None  # (RejectReason, detail) the reader found; the pipeline rejects it


@dataclass(frozen=True)
class ManifestLines:
    """The physical lines of a manifest that hold no row: with the rows' `lines`, they add up to `total`."""

    total: int
    header: int
    blank: int


def read_catalog(manifest_uri: str, config: CatalogConfig) -> list[CatalogRow]:
    """Reads every row of a manifest into `CatalogRow`s, in manifest order (see `read_manifest`)."""
    return read_manifest(manifest_uri, config)[0]


def read_manifest(manifest_uri: str, config: CatalogConfig,
                  split_bytes: int | None = None) -> tuple[list[CatalogRow], ManifestLines]:
    """Reads every row of a manifest into `CatalogRow`s, in manifest order, and counts the other lines.

    Columns are renamed by `config.columns` (manifest column → `title_id`/`title`/`genres`/`poster_uri`);
    other columns are ignored. Relative poster uris resolve against the manifest's directory; without a poster
    column (or with an empty cell) the poster is `<poster_root>/<title_id><poster_suffix>`.
    In this process, as one range unless `split_bytes` is given (then range by range, as `ReadCatalog` reads
    them, with the same result). Raises `CatalogError` for a manifest the user must fix.
    """
    rows, lines, spellings = [], [], {}
    for manifest_range in plan_manifest(manifest_uri, config, split_bytes or UNBOUNDED):
        tally = RangeTally()
        rows.extend(read_range(manifest_range, config, tally))
        lines.append(tally.manifest_lines())
        spellings = merge_spellings([spellings, tally.spellings])
    first_spellings = {key: spelling for key, (_, spelling) in spellings.items()}
    return [respelled(row, first_spellings) for row in rows], total_lines(lines)


def plan_manifest(manifest_uri: str, config: CatalogConfig, split_bytes: int) -> Iterator[ManifestRange]:
    """The manifest's ranges (`catalog_ranges.plan_ranges`); `CatalogError` for a missing or unknown manifest."""
    if not FileSystems.exists(manifest_uri):
        raise CatalogError(f"catalog manifest not found: {manifest_uri}")
    name = manifest_uri.lower()
    for suffix in COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    kind = FORMATS.get(os.path.splitext(name)[1])
    if kind is None:
        raise CatalogError(f"{manifest_uri}: cannot tell the manifest format from its name; "
                           f"use one of {', '.join(sorted(FORMATS))}")
    return plan_ranges(manifest_uri, kind, config.encoding, split_bytes)


@dataclass
class RangeTally:
    """What reading one range counted besides its rows: blank lines, lines in rows, first genre spellings."""

    header: int = 0
    blank: int = 0
    in_rows: int = 0
    spellings: dict = field(default_factory=dict)  # genre_key → (line number, spelling) of its first use

    def manifest_lines(self) -> ManifestLines:
        return ManifestLines(self.header + self.blank + self.in_rows, self.header, self.blank)


def read_range(manifest_range: ManifestRange, config: CatalogConfig, tally: RangeTally) -> Iterator[CatalogRow]:
    """The rows of one range, numbered as in the whole manifest; `tally` is filled as they are read.

    Genres are spelled as this range first spells them: `respelled` with `merge_spellings` of every range's
    tally makes them the manifest's first spelling.
    """
    uri = manifest_range.uri
    base = _directory_of(uri)
    poster_root = _resolve(config.poster_root, base) if config.poster_root else None
    roots = allowed_roots(config, base)
    names = GenreNames(config.genre_aliases)
    tally.header = manifest_range.header_lines
    number, checked = manifest_range.first_record - 1, not manifest_range.checks_columns
    for record in range_records(manifest_range, config.encoding):
        if record.blank:
            tally.blank += 1
            continue
        number += 1
        tally.in_rows += record.lines
        if record.values is None:
            yield CatalogRow(None, "", (), None, number, record.line_number, record.lines,
                             (RejectReason.MALFORMED_RECORD, record.detail))
            continue
        values = _renamed(record.values, config.columns, uri, check=not checked)
        if not checked:
            _check_required_columns(values, uri, config, poster_root)
            checked = True
        row = _catalog_row(values, number, record, config, base, poster_root, roots, names)
        for genre in row.genres:
            tally.spellings.setdefault(genre_key(genre), (row.line_number, genre))
        yield row


def merge_spellings(parts: Iterable[dict]) -> dict:
    """Ranges' first spellings (genre_key → (line, spelling)) → the manifest's: the one on the earliest line."""
    merged: dict = {}
    for part in parts:
        for key, seen in part.items():
            if key not in merged or seen < merged[key]:
                merged[key] = seen
    return merged


def respelled(row: CatalogRow, spellings: dict) -> CatalogRow:
    """`row` with each genre in the manifest's spelling (`spellings`: genre_key → spelling)."""
    genres = tuple(spellings.get(genre_key(genre), genre) for genre in row.genres)
    return row if genres == row.genres else dataclasses.replace(row, genres=genres)


def total_lines(parts: Iterable[ManifestLines]) -> ManifestLines:
    parts = list(parts)
    return ManifestLines(sum(p.total for p in parts), sum(p.header for p in parts), sum(p.blank for p in parts))


class ReadCatalog(beam.PTransform):
    """manifest uri → (PCollection[CatalogRow], PCollection[ManifestLines], one per range: they add up).

    One pass plans the ranges (`catalog_ranges.plan_ranges`: small descriptors, the manifest streamed, never
    held); the ranges are reshuffled so that workers read them in parallel; genres get the manifest's first
    spelling from a combine of each range's few first spellings. `rows, lines = pipeline | ReadCatalog(uri,
    config)`
    """

    def __init__(self, manifest_uri: str, config: CatalogConfig):
        super().__init__()
        self._manifest_uri = manifest_uri
        self._config = config

    def expand(self, pbegin):
        read = (pbegin
                | "Manifest" >> beam.Create([self._manifest_uri])
                | "PlanRanges" >> beam.FlatMap(_planned_ranges, self._config)
                | "SpreadRanges" >> beam.Reshuffle()
                | "ReadRanges" >> beam.ParDo(_ReadRangeDoFn(self._config)).with_outputs(
                    "lines", "spellings", main="rows"))
        spellings = (read.spellings
                     | "FirstSpellings" >> beam.CombineGlobally(merge_spellings)
                     | "SpellingsOnly" >> beam.Map(lambda merged: {k: spelling for k, (_, spelling) in merged.items()}))
        rows = read.rows | "OneSpellingPerGenre" >> beam.Map(respelled, beam.pvalue.AsSingleton(spellings))
        return rows, read.lines


def _planned_ranges(manifest_uri: str, config: CatalogConfig):
    for manifest_range in plan_manifest(manifest_uri, config, config.split_bytes):
        Metrics.counter(METRICS_NAMESPACE, "manifest_ranges").inc()
        yield manifest_range


class _ReadRangeDoFn(beam.DoFn):
    def __init__(self, config: CatalogConfig):
        self._config = config

    def process(self, manifest_range: ManifestRange):
        tally = RangeTally()
        yield from read_range(manifest_range, self._config, tally)
        yield beam.pvalue.TaggedOutput("lines", tally.manifest_lines())
        yield beam.pvalue.TaggedOutput("spellings", tally.spellings)


# --- genres -------------------------------------------------------------------------------------------------

def normalise_genre(name: str) -> str:
    """One genre name as the catalog means it: NFKC (fullwidth letters, compatibility forms), invisible and
    control characters dropped, every dash and minus sign as `-` with no space around it, runs of spaces as
    one, no space at either end. Case is kept (see `GenreNames`)."""
    text = unicodedata.normalize("NFKC", name)
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cf", "Cc") and not char.isspace():
            continue  # zero-width spaces and joiners, soft hyphens, BOMs, other controls
        kept.append("-" if category == "Pd" or char in _MINUS_SIGNS else char)
    text = " ".join("".join(kept).split())
    return re.sub(r" ?- ?", "-", text)


def genre_key(name: str) -> str:
    """What makes two spellings the same genre: the normalised name, case-folded."""
    return normalise_genre(name).casefold()


class GenreNames:
    """One spelling per genre: the `aliases` target when the name is an alias (or an alias target), else the first
    spelling seen by this object — the reader makes one per manifest, so spellings follow the manifest order."""

    def __init__(self, aliases: dict[str, str] | None = None):
        self._aliases = {genre_key(alias): normalise_genre(target) for alias, target in (aliases or {}).items()}
        self._spelling = {genre_key(target): target for target in self._aliases.values()}

    def canonical(self, name: str) -> str | None:
        """The canonical spelling of `name`; None when nothing is left of it after normalisation."""
        text = normalise_genre(name)
        if not text:
            return None
        text = self._aliases.get(text.casefold(), text)
        return self._spelling.setdefault(text.casefold(), text)


def split_genres(value: Any, separators: Iterable[str], names: GenreNames | None = None) -> tuple[str, ...]:
    """A genres cell → distinct canonical genre names (`GenreNames`) in listed order.

    A string is split on every one of `separators` (after NFKC, so a fullwidth `｜` is a `|`) and on tabs and
    line breaks; the items of a list (JSONL, Parquet) are split on tabs and line breaks only.
    """
    names = names or GenreNames()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    if isinstance(value, str):
        parts = _split(unicodedata.normalize("NFKC", value), [*separators, *ALWAYS_GENRE_SEPARATORS])
    else:
        parts = [piece for part in value if part is not None
                 for piece in _split(unicodedata.normalize("NFKC", str(part)), ALWAYS_GENRE_SEPARATORS)]
    canonical = (names.canonical(part) for part in parts)
    return tuple(dict.fromkeys(name for name in canonical if name))


def _split(text: str, separators: Iterable[str]) -> list[str]:
    pattern = "|".join(re.escape(separator) for separator in sorted(set(separators), key=len, reverse=True))
    return re.split(pattern, text)


# --- poster locations ---------------------------------------------------------------------------------------

def allowed_roots(config: CatalogConfig, base: str) -> list[str]:
    """Where posters may be read from: `catalog.allowed_roots` (relative ones against `base`, the manifest's
    directory), else `base` and any gs:// bucket; `catalog.poster_root` always."""
    if config.allowed_roots:
        roots = [_resolve(root, base) for root in config.allowed_roots]
    else:
        roots = [base, "gs://"]
    if config.poster_root:
        roots.append(_resolve(config.poster_root, base))
    return roots


def poster_roots(catalog_uri: str, config: CatalogConfig) -> list[str]:
    """`allowed_roots` of the manifest at `catalog_uri`: where its posters, and the redirects of http posters, may
    lead."""
    return allowed_roots(config, _directory_of(catalog_uri))


def is_inside(uri: str, roots: Iterable[str]) -> bool:
    """Whether `uri` (already resolved) lies in one of `roots`, judged on normalised paths (`..` resolved)."""
    uri = _normalised(uri)
    for root in roots:
        root = _normalised(root) if root != "gs://" else root
        if uri == root or uri.startswith(root if root.endswith("/") else root + "/"):
            return True
    return False


def _normalised(uri: str) -> str:
    if "://" in uri:
        scheme, _, path = uri.partition("://")
        return f"{scheme}://{posixpath.normpath('/' + path).lstrip('/')}"
    return os.path.normpath(os.path.abspath(uri))


# --- rows ---------------------------------------------------------------------------------------------------

def _catalog_row(record: dict, number: int, source: Record, config: CatalogConfig, base: str,
                 poster_root: str | None, roots: list[str], names: GenreNames) -> CatalogRow:
    title_id = _text(record.get("title_id"))
    poster = _text(record.get("poster_uri"))
    if poster:
        poster_uri = _resolve(poster, base)
    elif poster_root and title_id:
        poster_uri = _join(poster_root, title_id + config.poster_suffix)
    else:
        poster_uri = None
    problem = None
    if poster_uri and not is_inside(poster_uri, roots):
        scheme, _, rest = poster_uri.partition("://")
        example = f" (e.g. '{scheme}://{rest.split('/', 1)[0]}/')" if scheme.lower() in ("http", "https") else ""
        problem = (RejectReason.POSTER_OUTSIDE_ROOTS,
                   f"row {number}: the poster is outside the allowed roots ({', '.join(roots)}); add its location "
                   f"to catalog.allowed_roots{example} to read it")
    return CatalogRow(title_id=title_id, title=_text(record.get("title")) or "",
                      genres=split_genres(record.get("genres"), config.genre_separators, names),
                      poster_uri=poster_uri, row_number=number, line_number=source.line_number,
                      lines=source.lines, problem=problem)


def _check_required_columns(record: dict, manifest_uri: str, config: CatalogConfig, poster_root: str | None) -> None:
    if "title_id" not in record:
        raise CatalogError(f"{manifest_uri}: no title_id column (columns: {', '.join(record)}); "
                           f"map one with catalog.columns, e.g. --set catalog.columns.imdbId=title_id")
    if "poster_uri" not in record and poster_root is None:
        raise CatalogError(f"{manifest_uri}: no poster_uri column; map one with catalog.columns or set "
                           f"catalog.poster_root to the directory of <title_id>{config.poster_suffix} files")


def _renamed(record: dict, columns: dict[str, str], manifest_uri: str, check: bool) -> dict:
    if check:
        targets = list(columns.values())
        unknown = sorted(set(targets) - set(CATALOG_COLUMNS))
        if unknown:
            raise CatalogError(f"catalog.columns maps to {unknown[0]!r}; map manifest columns to one of "
                               f"{', '.join(CATALOG_COLUMNS)}")
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise CatalogError(f"catalog.columns maps more than one manifest column to {twice[0]!r}")
        missing = sorted(set(columns) - set(record))
        if missing:
            raise CatalogError(f"{manifest_uri}: catalog.columns names column {missing[0]!r}, which the "
                               f"manifest does not have (columns: {', '.join(map(str, record))})")
    renamed = {name: value for name, value in record.items() if name not in columns}
    renamed.update({columns[name]: record[name] for name in columns})
    return renamed


# --- reading ------------------------------------------------------------------------------------------------

def _text(value: Any) -> str | None:
    """A cell as a stripped string; empty, missing and NaN cells are None. Integer ids stay integers (`114709`)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _is_absolute(uri: str) -> bool:
    return "://" in uri or os.path.isabs(uri)


def _directory_of(uri: str) -> str:
    if "://" in uri:
        return uri.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(uri))


def _resolve(uri: str, base: str) -> str:
    return uri if _is_absolute(uri) else _join(base, uri)


def _join(base: str, name: str) -> str:
    if "://" in base:
        return _normalised(base.rstrip("/") + "/" + name.lstrip("/"))
    return os.path.normpath(os.path.join(base, name))
