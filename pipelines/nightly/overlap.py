"""overlap@k of a night's item→item lists with the previous night's, for titles whose poster did not change,
computed in bounded memory.

Four inputs — each night's embeddings (`title_id`, `image_sha256`) and item→item lists (`title_id`, the
neighbours' title ids) — are streamed in record batches and split by a hash of `title_id` into P partitions on
local disk (`part=N/data.parquet`, one row group per batch and partition). Each partition is then read alone,
all four inputs' rows of the same titles together, and its overlap shares summed. What is held at once: one
record batch while splitting, one partition (about rows / P titles of each input) while comparing; P grows
with the catalog (`nightly.overlap_rows_per_partition`), so memory does not.

Arrow reads and writes here on the calling thread, and the memory it freed is handed back after each batch and
partition (`release_unused`): with Arrow's own threads (`pyarrow.dataset.write_dataset`, threaded reads) the
pages they freed stayed resident, and the launcher's peak grew with the catalog (`posters bench scale`: 619 →
868 MB at 100k → 400k titles).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.embed.reader import parquet_errors

BATCH_ROWS = 65_536
MAX_PARTITIONS = 4096
SOURCES = ("today_hashes", "previous_hashes", "today_lists", "previous_lists")


def partition_count(rows: int, rows_per_partition: int) -> int:
    return max(1, min(MAX_PARTITIONS, math.ceil(rows / rows_per_partition)))


def title_partitions(title_ids: pa.Array, partitions: int) -> np.ndarray:
    """The partition of each title: crc32 of its id mod `partitions` (the same title → the same partition in
    every input)."""
    hashes = np.fromiter((zlib.crc32(t.encode("utf-8")) for t in title_ids.to_pylist()), np.int64, len(title_ids))
    return (hashes % partitions).astype(np.int32)


def _parquet_batches(files: list[str], columns: list[str], written_by: str) -> Iterator[pa.RecordBatch]:
    for path in files:
        with FileSystems.open(path, compression_type="uncompressed") as handle, parquet_errors(path, written_by):
            yield from pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False)


def hash_batches(files: list[str]) -> Iterator[pa.RecordBatch]:
    """(title_id, image_sha256) of embeddings files, batch by batch."""
    return _parquet_batches(files, ["title_id", "image_sha256"], "posters embed")


def list_batches(files: list[str], k: int) -> Iterator[pa.RecordBatch]:
    """(title_id, neighbours: the first k neighbours' title ids) of item→item files, batch by batch."""
    for batch in _parquet_batches(files, ["title_id", "neighbors"], "posters candidates"):
        column = batch.column("neighbors")
        ids = pa.ListArray.from_arrays(column.offsets, column.values.field("title_id"))
        yield pa.record_batch([batch.column("title_id"), pc.list_slice(ids, 0, k)], names=["title_id", "neighbours"])


def spill(batches: Iterator[pa.RecordBatch], directory: str, partitions: int) -> None:
    """Writes the batches under `directory/part=N/data.parquet`, each row in its title's partition: one row group
    per batch and partition, written at once on this thread (nothing buffered but the open files' footers)."""
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for batch in batches:
            batch = batch.replace_schema_metadata(None)  # every file's batches alike, whatever its writer noted
            parts = title_partitions(batch.column("title_id"), partitions)
            counts = np.bincount(parts, minlength=partitions)
            ordered, ends = batch.take(pa.array(np.argsort(parts, kind="stable"))), np.cumsum(counts)
            for part in np.flatnonzero(counts):
                start = ends[part] - counts[part]
                if part not in writers:
                    os.makedirs(f"{directory}/part={part}", exist_ok=True)
                    # No dictionary encoding: the ids are nearly all distinct, and the dictionaries raised the
                    # spill's peak (300k rows into 10 partitions: 102 → 63 MB over its start; 100: 119 → 52).
                    writers[part] = pq.ParquetWriter(f"{directory}/part={part}/data.parquet", batch.schema,
                                                     use_dictionary=False)
                writers[part].write_batch(ordered.slice(start, counts[part]))
            del ordered
            pa.default_memory_pool().release_unused()
    finally:
        for writer in writers.values():
            writer.close()


def read_partition(directory: str, part: int, columns: list[str]) -> pa.Table:
    partition_dir = f"{directory}/part={part}"
    try:
        return ds.dataset(partition_dir, format="parquet").to_table(columns=columns, use_threads=False)
    except FileNotFoundError:
        return pa.table({name: pa.array([], pa.string()) for name in columns})


def partition_overlap(today_hashes: pa.Table, previous_hashes: pa.Table, today_lists: pa.Table,
                      previous_lists: pa.Table, k: int) -> tuple[float, int, int]:
    """(sum of overlap shares, titles with both lists, titles whose poster is unchanged) of one partition.

    A title's share is |today's top-k ∩ yesterday's top-k| / the longer list's length capped at k."""
    before = dict(zip(previous_hashes.column("title_id").to_pylist(),
                      previous_hashes.column("image_sha256").to_pylist()))
    unchanged = {t for t, sha in zip(today_hashes.column("title_id").to_pylist(),
                                     today_hashes.column("image_sha256").to_pylist()) if before.get(t) == sha}
    del before
    yesterday = {t: n for t, n in zip(previous_lists.column("title_id").to_pylist(),
                                      previous_lists.column("neighbours").to_pylist()) if t in unchanged}
    total, compared = 0.0, 0
    for title, neighbours in zip(today_lists.column("title_id").to_pylist(),
                                 today_lists.column("neighbours").to_pylist()):
        if title in yesterday:
            now, then = set(neighbours[:k]), set(yesterday[title][:k])
            total += len(now & then) / max(1, len(now), len(then))
            compared += 1
    return total, compared, len(unchanged)


def overlap_report(today_embeddings: list[str], previous_embeddings: list[str], today_item2item: list[str],
                   previous_item2item: list[str], k: int, rows: int, rows_per_partition: int,
                   work_dir: Optional[str] = None) -> dict:
    """overlap@k over titles whose poster is unchanged and that have a list on both nights (None when none
    has), with `titles_compared` (unchanged posters), the partitions used and the largest partition's rows.
    `rows`: the larger night's title count (it sizes the partitions)."""
    partitions = partition_count(rows, rows_per_partition)
    spill_root = tempfile.mkdtemp(prefix="posters-overlap-", dir=work_dir)
    try:
        sources = dict(zip(SOURCES, (hash_batches(today_embeddings), hash_batches(previous_embeddings),
                                     list_batches(today_item2item, k), list_batches(previous_item2item, k))))
        for name, batches in sources.items():
            spill(batches, f"{spill_root}/{name}", partitions)
        total, compared, unchanged, largest = 0.0, 0, 0, 0
        for part in range(partitions):
            tables = [read_partition(f"{spill_root}/{name}", part, columns)
                      for name, columns in zip(SOURCES, (["title_id", "image_sha256"],) * 2
                                               + (["title_id", "neighbours"],) * 2)]
            largest = max(largest, *(t.num_rows for t in tables))
            part_total, part_compared, part_unchanged = partition_overlap(*tables, k)
            total, compared, unchanged = total + part_total, compared + part_compared, unchanged + part_unchanged
            del tables
            pa.default_memory_pool().release_unused()
    finally:
        shutil.rmtree(spill_root, ignore_errors=True)
    return {"overlap_at_k": total / compared if compared else None, "titles_compared": unchanged,
            "titles_with_both_lists": compared, "partitions": partitions, "largest_partition_rows": largest}
