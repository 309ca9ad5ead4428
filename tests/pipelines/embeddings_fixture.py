"""Embeddings in the embed pipeline's layout, for tests of the index and its readers.

`write_embeddings` writes `<dir>/part-NNNNN.parquet` files with `contracts.embeddings_schema`, then
`_manifest.json` and `_SUCCESS`, like the embed pipeline does.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.bench.index import clustered_unit_vectors
from pipelines.common import storage
from pipelines.contracts import EMBEDDINGS_MANIFEST_FILE, SUCCESS_FILE, embeddings_schema

MODEL_VERSION = "model-test-1"


def title_ids(n: int, start: int = 0) -> list[str]:
    return [f"tt{i:07d}" for i in range(start, start + n)]


def unit_vectors(n: int, dim: int = 16, seed: int = 0, clusters: int = 8) -> np.ndarray:
    return clustered_unit_vectors(n, dim, seed=seed, clusters=clusters, intrinsic_dim=min(4, dim))


def embeddings_table(ids: Sequence[str], vectors: np.ndarray, model_version: str = MODEL_VERSION) -> pa.Table:
    dim = vectors.shape[1]
    return pa.table({
        "title_id": list(ids),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), dim),
        "image_sha256": [f"sha-{t}" for t in ids],
        "model_version": [model_version] * len(ids),
        "genres": [["Drama", "Comedy"][: 1 + i % 2] for i in range(len(ids))],
    }, schema=embeddings_schema(dim, model_version))


def write_embeddings(directory: str, ids: Sequence[str], vectors: np.ndarray, files: int = 2,
                     model_version: str = MODEL_VERSION, manifest: bool = True,
                     metric: Optional[str] = None) -> str:
    """Writes the rows over `files` Parquet shards; returns `directory`."""
    table = embeddings_table(ids, vectors, model_version)
    if metric:
        table = table.replace_schema_metadata({**table.schema.metadata, b"metric": metric.encode()})
    names = []
    for part, rows in enumerate(np.array_split(np.arange(len(ids)), files)):
        buffer = io.BytesIO()
        pq.write_table(table.take(rows), buffer)
        names.append(f"part-{part:05d}.parquet")
        storage.write_bytes(storage.join(directory, names[-1]), buffer.getvalue())
    if manifest:
        storage.write_json(storage.join(directory, EMBEDDINGS_MANIFEST_FILE),
                           {"files": names, "rows": len(ids), "dim": vectors.shape[1],
                            "model_version": model_version, "metric": metric or "angular"})
    storage.write_bytes(storage.join(directory, SUCCESS_FILE), b"")
    return directory
