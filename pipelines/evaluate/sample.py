"""The titles `posters evaluate` scores: a stable sample of about `evaluate.max_titles`, read in batches.

    embeddings' footers ─▶ count N ─▶ fraction = min(1, max_titles / N)
    embeddings, batch by batch (column projection) ─▶ rows whose sample hash < fraction ─▶ the sample
    catalog manifest, row by row ─▶ title and poster of the sampled titles
    watch history, row by row ─▶ watches of the sampled titles

A title is in the sample when bytes 8–16 of the sha256 of its id, read as a fraction of 2**64, fall below the
fraction: the same titles on every run and machine whatever the order of the files, and independent of the
eval split (`pipelines.common.splits.is_eval` reads bytes 0–8 of the same digest), so the sample holds each
split in its own proportion. A catalog of at most `max_titles` is sampled whole (fraction 1, no hashing), in
file order: the evaluation is then the one of every title. What one process holds is the sample and one
Parquet batch, never the whole catalog (see docs/scaling.md).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common.catalog import CatalogRow, RangeTally, plan_manifest, read_range
from pipelines.common.catalog_ranges import UNBOUNDED
from pipelines.config import CatalogConfig
from pipelines.contracts import embeddings_schema
from pipelines.embed.reader import Embeddings, EmbeddingsError, describe_embeddings, embedding_matrix, parquet_errors

BATCH_ROWS = 65_536  # rows of one Parquet batch in memory while the sample is drawn (≈ 40 MB at 128-d)


@dataclass(frozen=True)
class Sample:
    """The sampled rows of an embeddings location (an `Embeddings` of those rows only) and what they stand for."""

    embeddings: Embeddings
    catalog_titles: int  # rows of the whole embeddings location
    fraction: float  # the hash threshold (1.0: every title)

    @property
    def whole(self) -> bool:
        return self.fraction >= 1.0

    def describe(self) -> dict:
        return {"titles": len(self.embeddings), "catalog_titles": self.catalog_titles,
                "fraction": round(self.fraction, 6), "whole": self.whole}


def sample_fraction(count: int, max_titles: int) -> float:
    """The hash threshold that keeps about `max_titles` of `count` titles (1.0 when all fit)."""
    return 1.0 if count <= max_titles else max_titles / count


def in_sample(title_id: str, fraction: float) -> bool:
    """Whether a title falls in the sample drawn at `fraction` (see the module docstring)."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(title_id.encode("utf-8")).digest()
    return int.from_bytes(digest[8:16], "big") / 2 ** 64 < fraction


def sampled_batches(files: Iterable[str], fraction: float, dim: int, model_version: str,
                    batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The rows of `files` in the sample, one filtered Parquet batch at a time, in file order."""
    columns = [f.name for f in embeddings_schema(dim, model_version)]
    for path in files:
        with FileSystems.open(path, compression_type="uncompressed") as handle, parquet_errors(path):
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns):
                versions = pc.unique(batch.column("model_version")).to_pylist()
                if any(v != model_version for v in versions):
                    raise EmbeddingsError(f"{path}: rows carry model_version {versions}, the file's metadata "
                                          f"says {model_version!r}")
                if fraction < 1.0:
                    keep = [in_sample(t, fraction) for t in batch.column("title_id").to_pylist()]
                    batch = batch.filter(pa.array(keep, pa.bool_()))
                if batch.num_rows:
                    yield batch


def read_sample(uri: str, max_titles: int, batch_rows: int = BATCH_ROWS) -> Sample:
    """The sample of the embeddings at `uri`: the count from the files' footers, then one pass in batches."""
    info = describe_embeddings(uri)
    fraction = sample_fraction(info.rows, max_titles)
    batches = list(sampled_batches(info.files, fraction, info.dim, info.model_version, batch_rows))
    schema = embeddings_schema(info.dim, info.model_version)
    table = pa.Table.from_batches(batches, schema=batches[0].schema) if batches else schema.empty_table()
    embeddings = Embeddings(
        title_ids=table.column("title_id").to_pylist(),
        vectors=embedding_matrix(table, info.dim) if table.num_rows else np.zeros((0, info.dim), np.float32),
        image_sha256=table.column("image_sha256").to_pylist(),
        genres=[list(g or []) for g in table.column("genres").to_pylist()],
        model_version=info.model_version, dim=info.dim, metric=info.metric)
    return Sample(embeddings, info.rows, fraction)


def sampled_catalog(manifest_uri: str, config: CatalogConfig, titles: set[str]) -> dict[str, CatalogRow]:
    """title_id → catalog row, for the titles in `titles` only, read row by row (the last row of a title wins,
    as a dict of the whole catalog would have it)."""
    rows = {}
    for manifest_range in plan_manifest(manifest_uri, config, UNBOUNDED):
        for row in read_range(manifest_range, config, RangeTally()):
            if row.title_id in titles:
                rows[row.title_id] = row
    return rows


def sampled_watches(uri: str, titles: set[str]) -> tuple[list, int]:
    """(the watches of titles in `titles`, in file order; the count of rows skipped as unreadable), read row by
    row from the history at `uri` (a file or a glob) with the candidates stage's default limits."""
    from pipelines.candidates.watch_history import (
        WatchEvent,
        history_format,
        read_watch_events,
        watch_limits,
    )
    from pipelines.config import CandidatesConfig

    fmt, limits = history_format(uri), watch_limits(CandidatesConfig())
    paths = sorted(m.path for m in FileSystems.match([uri])[0].metadata_list)
    if not paths:
        raise FileNotFoundError(f"watch history {uri!r}: no such file")
    events, skipped = [], 0
    for path in paths:
        with FileSystems.open(path) as handle:
            for row in read_watch_events(handle, fmt, limits, path):
                if not isinstance(row, WatchEvent):
                    skipped += 1
                elif row.title_id in titles:
                    events.append(row)
    return events, skipped
