"""A manifest split into ranges that workers read in parallel, and the records of one range.

`plan_ranges` walks the manifest once, streaming (one block of bytes and at most one CSV record's lines in
memory), and cuts it into `ManifestRange`s of about `split_bytes` each: CSV and JSONL at physical line starts
where a record starts, Parquet at row-group boundaries. Each range carries what a worker needs to read it
alone and number its rows exactly as a read of the whole file would: the 1-based line and record number at its
start, and the CSV header. `range_records` reads one range.

Where a CSV range may start cannot be told from the bytes around an offset (a quoted cell may hold line breaks,
and an unbalanced quote is a malformed record of one line after which parsing resumes on the next line), so
the planner parses every record; the ranges it cuts start where the sequential parse starts a record, with a
fresh parser, and a range's reader reads on past its end only to finish the record it is in (as Beam's text
source does). A compressed manifest, or one in an encoding where a line break is not the byte `\\n`, is one
range (it cannot be entered at an offset); so is a manifest smaller than `split_bytes`, without a planning pass.
"""
from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

UNBOUNDED = sys.maxsize
BLOCK_BYTES = 1 << 20
_LINE_END = re.compile(rb"\r\n|\r|\n")  # what io.StringIO(newline="") splits on, in bytes


class CatalogError(ValueError):
    """A manifest the user must fix (unknown format, a mapped column that is not there…); the message says what."""


@dataclass(frozen=True)
class ManifestRange:
    """One part of a manifest: bytes [start, stop) of a CSV or JSONL file (or rows groups [start, stop) of a
    Parquet file) whose first record is record `first_record` on line `first_line`."""

    uri: str
    kind: str  # csv | jsonl | parquet
    start: int
    stop: int
    first_line: int
    first_record: int
    header: Optional[tuple[str, ...]] = None  # CSV only: the header's field names
    header_lines: int = 0  # physical lines of the header, counted by the first range only
    checks_columns: bool = False  # this range holds the manifest's first well-formed record


@dataclass(frozen=True)
class Record:
    line_number: int
    lines: int
    values: Optional[dict]  # None: malformed (or a blank line)
    detail: str = ""
    offset: int = 0  # where its first physical line starts (bytes; characters in a range read whole)
    blank: bool = False


def plan_ranges(uri: str, kind: str, encoding: str, split_bytes: int) -> Iterator[ManifestRange]:
    """The manifest's ranges, in order (at least one). Raises `CatalogError` for a header that does not parse."""
    if kind == "parquet":
        yield from _parquet_ranges(uri, split_bytes)
        return
    whole = _is_compressed(uri) or not _ascii_compatible(encoding)
    size = FileSystems.match([uri])[0].metadata_list[0].size_in_bytes
    lines = _lines(uri, encoding, 0, whole, 1)
    header, header_lines, start, first_line = None, 0, 0, 1
    if kind == "csv":
        header, header_lines, start = _read_header(lines, uri)
        first_line = header_lines + 1
    first = ManifestRange(uri, kind, start, UNBOUNDED, first_line, 1, header, header_lines)
    if whole or size - start <= split_bytes:
        yield dataclasses.replace(first, checks_columns=True)
        return
    records = _csv_records(lines, header, first_line) if kind == "csv" else _jsonl_records(lines, first_line, False)
    current, number, checked = first, 0, False
    for record in records:
        if record.offset - current.start >= split_bytes:
            yield dataclasses.replace(current, stop=record.offset)
            current = ManifestRange(uri, kind, record.offset, UNBOUNDED, record.line_number, number + 1, header)
        if record.blank:
            continue
        number += 1
        if not checked and record.values is not None:
            current, checked = dataclasses.replace(current, checks_columns=True), True
    yield current


def range_records(manifest_range: ManifestRange, encoding: str) -> Iterator[Record]:
    """The records (blank lines too, as `blank` records) that start inside `manifest_range`, in manifest order."""
    r = manifest_range
    if r.kind == "parquet":
        table = _parquet_rows(r)
        yield from (Record(r.first_line + i, 1, values) for i, values in enumerate(table))
        return
    if r.kind == "csv" and r.header is None:
        return  # an empty manifest
    whole = _is_compressed(r.uri) or not _ascii_compatible(encoding)
    lines = _lines(r.uri, encoding, r.start, whole, r.first_line)
    records = (_csv_records(lines, r.header, r.first_line) if r.kind == "csv"
               else _jsonl_records(lines, r.first_line, True))
    for record in records:
        if record.offset >= r.stop:
            return
        yield record


def decode_line(data: bytes, encoding: str, uri: str, line_number: int, at_start: bool) -> str:
    """The text of `data` (line `line_number` on, possibly several lines) in `encoding`; a UTF-8 byte-order mark
    at the start of the file (`at_start`) is dropped. Bytes that do not decode are a `CatalogError` naming the
    file, the line and the setting, never replaced."""
    name = codecs.lookup(encoding).name
    try:
        return data.decode("utf-8-sig" if name == "utf-8" and at_start else encoding)
    except UnicodeDecodeError as err:
        line = line_number + data.count(b"\n", 0, err.start)
        raise CatalogError(f"{uri}: not valid {encoding} text (byte 0x{data[err.start]:02x} on line {line}: "
                           f"{err.reason}); set catalog.encoding to the manifest's encoding, e.g. --set "
                           "catalog.encoding=latin-1") from None


# --- physical lines -----------------------------------------------------------------------------------------

def _lines(uri: str, encoding: str, start: int, whole: bool, line_number: int) -> Iterator[tuple[int, str, int]]:
    """(offset, text, end offset) of each physical line from `start` (line `line_number`): byte offsets, or
    character offsets when `whole` (the file decoded at once: compressed, or an encoding whose line breaks are
    not single bytes)."""
    with FileSystems.open(uri, compression_type=CompressionTypes.AUTO if whole
                          else CompressionTypes.UNCOMPRESSED) as handle:
        if whole:
            text, offset = decode_line(handle.read(), encoding, uri, 1, True), 0
            for line in io.StringIO(text, newline=""):
                if offset >= start:
                    yield offset, line, offset + len(line)
                offset += len(line)
            return
        handle.seek(start)
        for offset, data in _byte_lines(handle, start):
            yield offset, decode_line(data, encoding, uri, line_number, offset == 0), offset + len(data)
            line_number += 1


def _byte_lines(handle, offset: int) -> Iterator[tuple[int, bytes]]:
    rest = b""
    while True:
        chunk = handle.read(BLOCK_BYTES)
        data, position = rest + chunk, 0
        for match in _LINE_END.finditer(data):
            if chunk and match.end() == len(data) and match.group() == b"\r":
                break  # a \r\n may be split across blocks
            yield offset, data[position:match.end()]
            offset += match.end() - position
            position = match.end()
        rest = data[position:]
        if not chunk:
            if rest:
                yield offset, rest
            return


def _read_header(lines: Iterator[tuple[int, str, int]], uri: str) -> tuple[Optional[tuple[str, ...]], int, int]:
    """(header fields, physical lines of the header, offset after it); no fields for an empty manifest."""
    taken = []
    source = ((taken.append(item), item[1])[1] for item in lines)
    try:
        header = next(csv.reader(source, strict=True), None)
    except csv.Error as err:
        raise CatalogError(f"{uri}: the header line does not parse as CSV ({err})") from None
    if header is None:
        return None, 0, 0
    return tuple(name.strip() for name in header), len(taken), taken[-1][2]


# --- records ------------------------------------------------------------------------------------------------

def _csv_records(lines: Iterator[tuple[int, str, int]], header: tuple[str, ...], line_number: int) -> Iterator[Record]:
    """Physical lines → records: a record that does not parse (strict CSV) or has another number of fields than
    the header is a malformed record of its first line alone, and parsing resumes on the next line, so an
    unbalanced quote never swallows the rows after it (it holds at most csv's field size limit of lines)."""
    pending: collections.deque = collections.deque()
    taken: list = []

    def feed():
        while True:
            item = pending.popleft() if pending else next(lines, None)
            if item is None:
                return
            taken.append(item)
            yield item[1]

    while True:
        reader = csv.reader(feed(), strict=True)
        while True:
            taken.clear()
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                pending.extendleft(reversed(taken[1:]))
                yield Record(line_number, 1, None, f"line {line_number} does not parse as a CSV record ({err}); "
                                                   "is a quote unbalanced?", taken[0][0])
                line_number += 1
                break
            offset, span = taken[0][0], len(taken)
            if span == 1 and not taken[0][1].strip():
                yield Record(line_number, 1, None, "", offset, blank=True)
            elif len(fields) != len(header):
                yield Record(line_number, 1, None, f"line {line_number} has {len(fields)} fields, the header has "
                                                   f"{len(header)}", offset)
                if span > 1:  # it swallowed the lines after it: parse them again on their own
                    pending.extendleft(reversed(taken[1:]))
                    line_number += 1
                    break
                span = 1
            else:
                yield Record(line_number, span, dict(zip(header, fields)), "", offset)
            line_number += span


def _jsonl_records(lines: Iterator[tuple[int, str, int]], line_number: int, parse_all: bool) -> Iterator[Record]:
    """Physical lines → records; without `parse_all` (the planner) lines after the first JSON object are not
    parsed (their `values` are `{}`)."""
    parse = True
    for offset, line, _end in lines:
        if not line.strip():
            yield Record(line_number, 1, None, "", offset, blank=True)
        elif not parse:
            yield Record(line_number, 1, {}, "", offset)
        else:
            record = _jsonl_record(line, line_number, offset)
            parse = parse_all or record.values is None
            yield record
        line_number += 1


def _jsonl_record(line: str, line_number: int, offset: int) -> Record:
    try:
        values = json.loads(line)
    except json.JSONDecodeError as err:
        return Record(line_number, 1, None, f"line {line_number} is not JSON ({err.msg} at column {err.colno})",
                      offset)
    if not isinstance(values, dict):
        return Record(line_number, 1, None, f"line {line_number} is a JSON {type(values).__name__}, not an object",
                      offset)
    return Record(line_number, 1, values, "", offset)


# --- Parquet ------------------------------------------------------------------------------------------------

def _parquet_file(uri: str):
    import pyarrow.parquet as pq

    handle = FileSystems.open(uri, compression_type=CompressionTypes.AUTO)
    if _is_compressed(uri):
        with handle:
            return pq.ParquetFile(io.BytesIO(handle.read()))
    return pq.ParquetFile(handle)


def _parquet_ranges(uri: str, split_bytes: int) -> Iterator[ManifestRange]:
    metadata = _parquet_file(uri).metadata
    start, first_record, size, rows = 0, 1, 0, 0
    for group in range(metadata.num_row_groups):
        size += metadata.row_group(group).total_byte_size
        rows += metadata.row_group(group).num_rows
        if size >= split_bytes and group + 1 < metadata.num_row_groups:
            yield ManifestRange(uri, "parquet", start, group + 1, first_record, first_record,
                                checks_columns=start == 0)
            start, first_record, size = group + 1, 1 + rows, 0
    yield ManifestRange(uri, "parquet", start, max(start + 1, metadata.num_row_groups), first_record, first_record,
                        checks_columns=start == 0)


def _parquet_rows(manifest_range: ManifestRange) -> list[dict]:
    parquet = _parquet_file(manifest_range.uri)
    groups = range(manifest_range.start, min(manifest_range.stop, parquet.metadata.num_row_groups))
    if not groups:
        return []
    return parquet.read_row_groups(list(groups)).to_pylist()


# --- what can be split --------------------------------------------------------------------------------------

def _is_compressed(uri: str) -> bool:
    return CompressionTypes.detect_compression_type(uri) != CompressionTypes.UNCOMPRESSED


def _ascii_compatible(encoding: str) -> bool:
    """Whether every line break and quote of the text is that one ASCII byte (UTF-8, Latin-1, cp125x…)."""
    probe = "\r\n\",{}ab"
    try:
        return probe.encode(encoding) == probe.encode("ascii") and codecs.lookup(encoding).name != "utf-8-sig"
    except (UnicodeError, LookupError):
        return False
