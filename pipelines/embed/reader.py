"""Reading the embed pipeline's Parquet output (local path or gs://) into numpy.

An embeddings location is one of:
- a directory marked complete by `_SUCCESS` (written last when it is published; a directory without it is
  being written or was left half-published, and is refused), read through its `_manifest.json`
  (`embeddings_manifest.json` in folders written before side files were named with "_") when it has one
  (what the embed pipeline writes; a bare glob could pick up shards of an older run beside the new ones, so the
  manifest wins when present), else as its `*.parquet` files;
- one `.parquet` file.
Every file must carry the embeddings schema (`contracts.embeddings_schema`) with the same dim, metric and
model_version in its metadata; anything else is an `EmbeddingsError` that says which file and what differs.
"""
from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common import storage
from pipelines.contracts import EMBEDDINGS_MANIFEST_FILE, LEGACY_EMBEDDINGS_MANIFEST_FILE, embeddings_schema


class EmbeddingsError(ValueError):
    """Embeddings that cannot be read as the contract says; the message names the file and the problem."""


@dataclass(frozen=True)
class EmbeddingsInfo:
    """What an embeddings location holds, from its manifest and the files' footers (no vectors read)."""

    files: list[str]
    rows: int
    dim: int
    metric: str
    model_version: str


@dataclass
class Embeddings:
    title_ids: list[str]
    vectors: np.ndarray  # float32 [n, dim]
    image_sha256: list[str]
    genres: list[list[str]]
    model_version: str
    dim: int
    metric: str

    def __len__(self) -> int:
        return len(self.title_ids)


def describe_embeddings(uri: str) -> EmbeddingsInfo:
    """Lists the files of an embeddings location and checks that their schemas agree with each other."""
    files, manifest = _embedding_files(uri)
    if not files:
        raise EmbeddingsError(f"{uri}: no Parquet files to read")
    first = _file_metadata(files[0])
    rows = 0
    for path in files:
        dim, metric, model_version, num_rows = _file_metadata(path)
        if (dim, metric, model_version) != first[:3]:
            raise EmbeddingsError(
                f"{path}: dim/metric/model_version {dim}/{metric}/{model_version} differ from "
                f"{files[0]}'s {first[0]}/{first[1]}/{first[2]}; one embeddings location holds one model's output")
        rows += num_rows
    info = EmbeddingsInfo(files=files, rows=rows, dim=first[0], metric=first[1], model_version=first[2])
    if manifest:
        _check_manifest_agrees(uri, manifest, info)
    return info


def read_embeddings(uri: str) -> Embeddings:
    """Reads every row of an embeddings location: title ids, a float32 [n, dim] matrix, hashes and genres."""
    info = describe_embeddings(uri)
    table = pa.concat_tables([_read_file(path, info) for path in info.files])
    return Embeddings(
        title_ids=table.column("title_id").to_pylist(),
        vectors=embedding_matrix(table, info.dim),
        image_sha256=table.column("image_sha256").to_pylist(),
        genres=[list(g or []) for g in table.column("genres").to_pylist()],
        model_version=info.model_version,
        dim=info.dim,
        metric=info.metric,
    )


def embedding_matrix(table: pa.Table, dim: int) -> np.ndarray:
    """The `embedding` column of a table (or record batch) as a float32 [rows, dim] array; nulls are an error."""
    column = table.column("embedding")
    if column.null_count:
        missing = pc.filter(table.column("title_id"), pc.is_null(column)).to_pylist()[:5]
        raise EmbeddingsError(f"rows without an embedding (title_id {', '.join(map(str, missing))} …)")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(len(column), dim)


@contextlib.contextmanager
def parquet_errors(path: str, written_by: str = "posters embed") -> Iterator[None]:
    """Turns pyarrow's errors while reading the Parquet file `path` (a truncated file: "magic bytes not found")
    into an `EmbeddingsError` that names the file and what to do."""
    try:
        yield
    except pa.ArrowException as err:
        raise EmbeddingsError(f"{path} is not a readable Parquet file ({err}); it is truncated or damaged: "
                              f"rerun `{written_by}` to write it again") from err


def has_column(path: str, name: str) -> bool:
    """Whether the Parquet file `path` has a column `name` (read from its footer)."""
    with FileSystems.open(path, compression_type="uncompressed") as handle, parquet_errors(path):
        return pq.ParquetFile(handle).schema_arrow.get_field_index(name) >= 0


def manifest_location(uri: str) -> str | None:
    """The manifest of the embeddings folder `uri`: `_manifest.json`, or an older folder's
    `embeddings_manifest.json`; None when it has neither."""
    for name in (EMBEDDINGS_MANIFEST_FILE, LEGACY_EMBEDDINGS_MANIFEST_FILE):
        if storage.exists(storage.join(uri, name)):
            return storage.join(uri, name)
    return None


def _embedding_files(uri: str) -> tuple[list[str], dict | None]:
    uri = uri.rstrip("/")
    if uri.endswith(".parquet"):
        return [uri], None
    if not storage.is_complete(uri):
        raise EmbeddingsError(storage.incomplete_message(uri) + " (posters embed)")
    manifest_uri = manifest_location(uri)
    if manifest_uri:
        manifest = storage.read_json(manifest_uri)
        files = [name if "://" in name or posixpath.isabs(name) else storage.join(uri, name)
                 for name in manifest.get("files", [])]
        missing = [path for path in files if not storage.exists(path)]
        if missing:
            raise EmbeddingsError(f"{manifest_uri} lists files that do not exist: {', '.join(missing[:5])}")
        return files, manifest
    matches = FileSystems.match([storage.join(uri, "*.parquet")])[0].metadata_list
    names = sorted(m.path for m in matches)
    return [p for p in names if not posixpath.basename(p).startswith((".", "_"))], None


def _file_metadata(path: str) -> tuple[int, str, str, int]:
    with FileSystems.open(path, compression_type="uncompressed") as handle, parquet_errors(path):
        parquet = pq.ParquetFile(handle)
        schema, num_rows = parquet.schema_arrow, parquet.metadata.num_rows
    metadata = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    try:
        dim, metric, model_version = int(metadata["dim"]), metadata["metric"], metadata["model_version"]
    except (KeyError, ValueError) as err:
        raise EmbeddingsError(f"{path}: schema metadata lacks dim/metric/model_version ({err})") from err
    expected = embeddings_schema(dim, model_version, metric)
    for field in expected:
        if schema.get_field_index(field.name) < 0 or not schema.field(field.name).type.equals(field.type):
            found = schema.field(field.name).type if schema.get_field_index(field.name) >= 0 else "missing"
            raise EmbeddingsError(f"{path}: column {field.name} should be {field.type}, found {found}")
    return dim, metric, model_version, num_rows


def _read_file(path: str, info: EmbeddingsInfo) -> pa.Table:
    with FileSystems.open(path, compression_type="uncompressed") as handle, parquet_errors(path):
        table = pq.read_table(handle, columns=[f.name for f in embeddings_schema(info.dim, info.model_version)])
    versions = pc.unique(table.column("model_version")).to_pylist()
    if any(v != info.model_version for v in versions):
        raise EmbeddingsError(f"{path}: rows carry model_version {versions}, the file's metadata says "
                              f"{info.model_version!r}")
    return table


def _check_manifest_agrees(uri: str, manifest: dict, info: EmbeddingsInfo) -> None:
    expected = {"rows": info.rows, "dim": info.dim, "model_version": info.model_version, "metric": info.metric}
    for key, value in expected.items():
        if key in manifest and manifest[key] != value:
            raise EmbeddingsError(f"{manifest_location(uri)}: {key} is {manifest[key]!r} "
                                  f"but the files hold {value!r}")
