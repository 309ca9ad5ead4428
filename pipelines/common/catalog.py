"""The one catalog reader: a manifest (CSV, JSONL or Parquet; local or gs://) → `CatalogRow`s.

Every pipeline reads its catalog here, so column mapping, genre splitting and poster locations mean the same
thing everywhere. `read_catalog` is a plain function; `ReadCatalog` runs it inside a pipeline, on one worker.
The rows are not reshuffled here: every pipeline validates them next with `ValidateCatalogRows`, whose group by
title_id already spreads them over the workers before any poster is read, so a reshuffle would be a second
shuffle of the whole catalog for nothing.

What the reader does *not* do is judge rows: a missing `title_id`, a duplicate or an empty genre list is
passed on as read (with its `row_number`) so the pipeline can reject it with a reason.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.config import CatalogConfig
from pipelines.contracts import CATALOG_COLUMNS

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".deflate")


class CatalogError(ValueError):
    """A manifest the user must fix (unknown format, a mapped column that is not there…); the message says what."""


@dataclass(frozen=True)
class CatalogRow:
    title_id: str | None  # None when the manifest cell is empty; the pipeline rejects such rows
    title: str
    genres: tuple[str, ...]
    poster_uri: str | None  # absolute (local path or gs://…); None when the row names no poster
    row_number: int  # 1-based position among the manifest's data rows (not counting a CSV header)


def read_catalog(manifest_uri: str, config: CatalogConfig) -> list[CatalogRow]:
    """Reads every row of a manifest into `CatalogRow`s, in manifest order.

    Columns are renamed by `config.columns` (manifest column → `title_id`/`title`/`genres`/`poster_uri`);
    other columns are ignored. Relative poster uris resolve against the manifest's directory; without a poster
    column (or with an empty cell) the poster is `<poster_root>/<title_id><poster_suffix>`.
    Raises `CatalogError` for a manifest the user must fix.
    """
    records = _read_records(manifest_uri, config)
    base = _directory_of(manifest_uri)
    poster_root = _resolve(config.poster_root, base) if config.poster_root else None
    rows = []
    for number, record in enumerate(_renamed(records, config.columns, manifest_uri), start=1):
        if number == 1 and "title_id" not in record:
            raise CatalogError(f"{manifest_uri}: no title_id column (columns: {', '.join(record)}); "
                               f"map one with catalog.columns, e.g. --set catalog.columns.imdbId=title_id")
        if number == 1 and "poster_uri" not in record and poster_root is None:
            raise CatalogError(f"{manifest_uri}: no poster_uri column; map one with catalog.columns or set "
                               f"catalog.poster_root to the directory of <title_id>{config.poster_suffix} files")
        rows.append(_catalog_row(record, number, config, base, poster_root))
    return rows


class ReadCatalog(beam.PTransform):
    """manifest uri → PCollection[CatalogRow], read on one worker; the consumer's first GroupByKey (in
    `ValidateCatalogRows`) spreads the rows for parallel poster reads."""

    def __init__(self, manifest_uri: str, config: CatalogConfig):
        super().__init__()
        self._manifest_uri = manifest_uri
        self._config = config

    def expand(self, pbegin):
        return (pbegin
                | "Manifest" >> beam.Create([self._manifest_uri])
                | "ReadRows" >> beam.FlatMap(read_catalog, self._config))


def split_genres(value: Any, separators: Iterable[str]) -> tuple[str, ...]:
    """A genres cell → distinct, stripped genre names in listed order.

    A list (JSONL, Parquet) is taken as is; a string is split on the first of `separators` it contains.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    if isinstance(value, str):
        separator = next((s for s in separators if s in value), None)
        parts = value.split(separator) if separator else [value]
    else:
        parts = [str(part) for part in value if part is not None]
    return tuple(dict.fromkeys(part.strip() for part in parts if part.strip()))


def _catalog_row(record: dict, number: int, config: CatalogConfig, base: str,
                 poster_root: str | None) -> CatalogRow:
    title_id = _text(record.get("title_id"))
    poster = _text(record.get("poster_uri"))
    if poster:
        poster_uri = _resolve(poster, base)
    elif poster_root and title_id:
        poster_uri = _join(poster_root, title_id + config.poster_suffix)
    else:
        poster_uri = None
    return CatalogRow(title_id=title_id, title=_text(record.get("title")) or "",
                      genres=split_genres(record.get("genres"), config.genre_separators),
                      poster_uri=poster_uri, row_number=number)


def _renamed(records: Iterator[dict], columns: dict[str, str], manifest_uri: str) -> Iterator[dict]:
    targets = list(columns.values())
    unknown = sorted(set(targets) - set(CATALOG_COLUMNS))
    if unknown:
        raise CatalogError(f"catalog.columns maps to {unknown[0]!r}; map manifest columns to one of "
                           f"{', '.join(CATALOG_COLUMNS)}")
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise CatalogError(f"catalog.columns maps more than one manifest column to {twice[0]!r}")
    for number, record in enumerate(records, start=1):
        if number == 1:
            missing = sorted(set(columns) - set(record))
            if missing:
                raise CatalogError(f"{manifest_uri}: catalog.columns names column {missing[0]!r}, which the "
                                   f"manifest does not have (columns: {', '.join(map(str, record))})")
        renamed = {name: value for name, value in record.items() if name not in columns}
        renamed.update({columns[name]: record[name] for name in columns})
        yield renamed


def _read_records(manifest_uri: str, config: CatalogConfig) -> Iterator[dict]:
    if not FileSystems.exists(manifest_uri):
        raise CatalogError(f"catalog manifest not found: {manifest_uri}")
    name = manifest_uri.lower()
    for suffix in COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    kind = FORMATS.get(os.path.splitext(name)[1])
    if kind is None:
        raise CatalogError(f"{manifest_uri}: cannot tell the manifest format from its name; "
                           f"use one of {', '.join(sorted(FORMATS))}")
    with FileSystems.open(manifest_uri, compression_type=CompressionTypes.AUTO) as handle:
        data = handle.read()
    if kind == "parquet":
        import pyarrow.parquet as pq

        return iter(pq.read_table(io.BytesIO(data)).to_pylist())
    # Undecodable bytes (a latin-1 title in a UTF-8 file) become U+FFFD instead of failing the whole catalog.
    encoding = "utf-8-sig" if config.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else config.encoding
    text = data.decode(encoding, errors="replace")
    if kind == "csv":
        return _csv_records(text)
    return _jsonl_records(text, manifest_uri)


def _csv_records(text: str) -> Iterator[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    return iter(reader)


def _jsonl_records(text: str, manifest_uri: str) -> Iterator[dict]:
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CatalogError(f"{manifest_uri}:{line_number}: not a JSON object: {err}") from err
        if not isinstance(record, dict):
            raise CatalogError(f"{manifest_uri}:{line_number}: expected a JSON object, got {type(record).__name__}")
        yield record


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
        return base.rstrip("/") + "/" + name.lstrip("/")
    return os.path.normpath(os.path.join(base, name))
