"""Small inputs for the candidates, nightly and views tests: embeddings written straight in the contract's
schema, and a published index built from them by the real index pipeline."""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.common import storage
from pipelines.contracts import EMBEDDINGS_MANIFEST_FILE, SUCCESS_FILE, embeddings_schema


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_embeddings(uri: str, title_ids: Sequence[str], vectors: np.ndarray, model_version: str = "model-a",
                     image_sha256: Optional[Sequence[str]] = None,
                     genres: Optional[Sequence[Sequence[str]]] = None) -> str:
    """One Parquet part + manifest + `_SUCCESS` under `uri` (local or gs://), as the embed pipeline lays out."""
    dim = vectors.shape[1]
    table = pa.Table.from_pydict({
        "title_id": list(title_ids),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        "image_sha256": list(image_sha256 or [f"sha-{t}" for t in title_ids]),
        "model_version": [model_version] * len(title_ids),
        "genres": [list(g) for g in (genres or [["Drama"]] * len(title_ids))],
    }, schema=embeddings_schema(dim, model_version))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(storage.join(uri, "part-00000.parquet"), buffer.getvalue())
    storage.write_json(storage.join(uri, EMBEDDINGS_MANIFEST_FILE),
                       {"files": ["part-00000.parquet"], "rows": len(title_ids), "dim": dim,
                        "model_version": model_version})
    storage.write_bytes(storage.join(uri, SUCCESS_FILE), b"{}")
    return uri


def build_index(embeddings_uri: str, index_uri: str, overrides: Sequence[str] = ()) -> dict:
    """Builds and publishes an index with the real index pipeline (DirectRunner); returns its manifest."""
    from pipelines.config import load_config
    from pipelines.index import pipeline as index

    return index.build_and_publish(load_config("configs/local.yaml", list(overrides)), embeddings_uri, index_uri)


def exact_neighbours(query: np.ndarray, title_ids: Sequence[str], vectors: np.ndarray, exclude, k: int):
    """Brute-force top-k (title_id, score) by inner product, skipping `exclude`."""
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")
    ranked = [(title_ids[i], float(scores[i])) for i in order if title_ids[i] not in exclude]
    return ranked[:k]
