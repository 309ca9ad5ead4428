"""Embeddings → sharded Parquet files with the explicit contract schema, a manifest, and a publish step.

Rows are dicts with the schema's columns (`title_id`, `embedding`, `image_sha256`, `model_version`, `genres`,
`poster_object`: `contracts.embed_output_schema`).
Each title goes to shard `stable_hash(title_id) % num_shards`, where the number of shards follows from the row
count and `embed.max_rows_per_file`; a shard is sorted by `title_id` and split into files of at most that many
rows. Same rows in → same files out, whatever the runner's bundling.

Files land in a staging directory; `write_manifest` lists them (readers follow the manifest, never a glob) and
`storage.publish_directory` moves the directory into place with `_SUCCESS` last.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage
from pipelines.contracts import (
    EMBEDDING_METRIC,
    EMBEDDINGS_MANIFEST_FILE,
    POSTER_OBJECT_COLUMN,
    POSTER_OBJECT_TYPE,
    embed_output_schema,
)

PART_GLOB = "part-*.parquet"


def part_name(shard: int, chunk: int) -> str:
    return f"part-{shard:05d}-{chunk:03d}.parquet"


def shard_of(title_id: str, num_shards: int) -> int:
    """A stable shard for a title (the same on every machine and Python process, unlike `hash`)."""
    digest = hashlib.sha256(title_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def num_shards_for(num_rows: int, max_rows_per_file: int) -> int:
    return max(1, math.ceil(num_rows / max_rows_per_file))


def embeddings_table(rows: Iterable[dict], dim: int, model_version: str) -> pa.Table:
    """Rows (any order) → a table in `embed_output_schema`, sorted by `title_id`; checks each vector's length.
    A row without a `poster_object` has a null one."""
    rows = sorted(rows, key=lambda row: row["title_id"])
    for row in rows:
        if len(row["embedding"]) != dim:
            raise ValueError(f"title {row['title_id']}: embedding has {len(row['embedding'])} values, "
                             f"the model's dim is {dim}")
    schema = embed_output_schema(dim, model_version)
    vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32).reshape(len(rows), dim)
    columns = {
        "title_id": pa.array([row["title_id"] for row in rows], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        "image_sha256": pa.array([row["image_sha256"] for row in rows], pa.string()),
        "model_version": pa.array([row["model_version"] for row in rows], pa.string()),
        "genres": pa.array([list(row["genres"]) for row in rows], pa.list_(pa.string())),
        POSTER_OBJECT_COLUMN: pa.array([row.get(POSTER_OBJECT_COLUMN) for row in rows], POSTER_OBJECT_TYPE),
    }
    return pa.Table.from_pydict(columns, schema=schema)


def write_parquet(uri: str, table: pa.Table) -> None:
    """One Parquet file through FileSystems (local or gs://), built in memory: files are bounded in rows."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, use_compliant_nested_type=False)  # read back equal to the contract schema
    storage.write_bytes(uri, sink.getvalue().to_pybytes())


def write_shard(shard: int, rows: Iterable[dict], out_dir: str, dim: int, model_version: str,
                max_rows_per_file: int) -> list[tuple[str, int]]:
    """Writes one shard's rows, sorted by title_id, as files of at most `max_rows_per_file` rows.

    Returns `(file name, rows)` per file. Rewriting a shard (a retried bundle) rewrites the same names.
    """
    table = embeddings_table(rows, dim, model_version)
    written = []
    for chunk, start in enumerate(range(0, table.num_rows, max_rows_per_file)):
        name = part_name(shard, chunk)
        part = table.slice(start, max_rows_per_file)
        write_parquet(storage.join(out_dir, name), part)
        written.append((name, part.num_rows))
    return written


class WriteEmbeddings(beam.PTransform):
    """PCollection of embedding rows → Parquet parts in `out_dir`; outputs `(file name, rows)` per file."""

    def __init__(self, out_dir: str, dim: int, model_version: str, max_rows_per_file: int):
        super().__init__()
        self.out_dir, self.dim, self.model_version = out_dir, dim, model_version
        self.max_rows_per_file = max_rows_per_file

    def expand(self, rows):
        out_dir, dim, model_version, max_rows = self.out_dir, self.dim, self.model_version, self.max_rows_per_file
        num_shards = (rows
                      | "CountRows" >> beam.combiners.Count.Globally()
                      | "NumShards" >> beam.Map(num_shards_for, max_rows))
        return (rows
                | "KeyByShard" >> beam.Map(lambda row, n: (shard_of(row["title_id"], n), row),
                                           n=beam.pvalue.AsSingleton(num_shards))
                | "GroupShards" >> beam.GroupByKey()
                | "WriteShards" >> beam.FlatMap(
                    lambda shard_rows: write_shard(*shard_rows, out_dir, dim, model_version, max_rows)))


def write_manifest(out_dir: str, files: Iterable[tuple[str, int]], dim: int, model_version: str,
                   counts: dict) -> dict:
    """Writes `EMBEDDINGS_MANIFEST_FILE` listing the files (relative names, sorted) and returns it.

    With no rows at all one empty file is written, so readers still find the schema.
    """
    files = sorted(files)
    if not files:
        name = part_name(0, 0)
        write_parquet(storage.join(out_dir, name), embeddings_table([], dim, model_version))
        files = [(name, 0)]
    manifest = {"files": [name for name, _ in files], "rows": sum(rows for _, rows in files), "dim": dim,
                "model_version": model_version, "metric": EMBEDDING_METRIC, "counts": counts}
    storage.write_json(storage.join(out_dir, EMBEDDINGS_MANIFEST_FILE), manifest)
    return manifest


def parquet_files(out_dir: str) -> list[tuple[str, int]]:
    """`(file name, rows)` of each Parquet part in a staging directory, from the files' own footers."""
    found = []
    matches = FileSystems.match([storage.join(out_dir, PART_GLOB)])[0].metadata_list
    for path in sorted(m.path for m in matches):
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            found.append((path.rsplit("/", 1)[-1], pq.read_metadata(handle).num_rows))
    return found


def publish_embeddings(staging: str, final: str, manifest: dict) -> None:
    """Moves a complete staging directory (parts + manifest) to `final`; `_SUCCESS` is written last."""
    summary = {key: manifest[key] for key in ("rows", "dim", "model_version", "counts")}
    storage.publish_directory(staging, final, summary)
