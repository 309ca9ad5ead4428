"""The model export: a SavedModel from encoded poster bytes to L2-normalised embeddings, plus `model_meta.json`.

The serving signature `SERVING_SIGNATURE` takes `SERVING_INPUT` (tf.string [None], encoded images in any
format TensorFlow decodes) and returns `SERVING_OUTPUT` (float32 [None, dim], unit vectors). It decodes and
resizes with `pipelines.transform.poster_pixels`, the very function the preprocess used for the training data,
then runs the embedding model (which holds the backbone's own preprocessing), so serving sees the training
pixels. The directory is self-sufficient: loading needs TensorFlow only, not this package nor Keras.

`model_meta.json`: backbone, input_size, dim, metric, genres (the vocabulary), model_version (a content hash
of the weights and of what shapes the input), created (UTC). The directory is published whole (`_SUCCESS`).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from pipelines import storage
from pipelines.contracts import EMBEDDING_METRIC, MODEL_META_FILE, SERVING_INPUT, SERVING_OUTPUT, SERVING_SIGNATURE
from pipelines.transform import poster_pixels


class ExportError(ValueError):
    """An exported model that cannot be used; the message says what is wrong."""


class PosterServing(tf.Module):
    """What the SavedModel holds: the embedding model behind a bytes-in serving function."""

    def __init__(self, embedder: keras.Model, input_size: int):
        super().__init__()
        self.embedder = embedder
        self.input_size = input_size

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
    def serve(self, image_bytes):
        size = self.input_size
        pixels = tf.map_fn(lambda data: poster_pixels(data, size), image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
        return {SERVING_OUTPUT: self.embedder(pixels, training=False)}


def model_version(embedder: keras.Model, backbone: str, input_size: int) -> str:
    """Content hash of the weights (names, shapes, values) and of the input definition: same hash, same vectors."""
    digest = hashlib.sha256(f"{backbone}|{input_size}|{EMBEDDING_METRIC}".encode())
    for weight in embedder.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{weight.path}|{value.shape}|{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def export_model(embedder: keras.Model, out_uri: str, backbone: str, input_size: int, genres: list[str],
                 extra_meta: dict | None = None) -> dict:
    """Writes the SavedModel and `model_meta.json` to `out_uri` (local or gs://), replacing it whole.

    `embedder` maps pixels [B, size, size, 3] in [0, 255] to unit vectors [B, dim]. Returns the meta.
    """
    meta = {
        "backbone": backbone,
        "input_size": int(input_size),
        "dim": int(embedder.output.shape[-1]),
        "metric": EMBEDDING_METRIC,
        "genres": list(genres),
        "model_version": model_version(embedder, backbone, input_size),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra_meta or {}),
    }
    staging = storage.staging_uri(out_uri)
    local = staging if not storage.is_gcs(out_uri) else tempfile.mkdtemp(prefix="poster-export-")
    try:
        module = PosterServing(embedder, input_size)
        tf.saved_model.save(module, local, signatures={SERVING_SIGNATURE: module.serve})
        with open(os.path.join(local, MODEL_META_FILE), "w") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True)
        if storage.is_gcs(out_uri):
            _upload_tree(local, staging)
        storage.publish_directory(staging, out_uri, summary={"model_version": meta["model_version"]})
    except BaseException:
        storage.delete_tree(staging)
        raise
    finally:
        if local != staging:
            shutil.rmtree(local, ignore_errors=True)
    return meta


def _upload_tree(local_dir: str, uri: str) -> None:
    for root, _, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                storage.write_bytes(storage.join(uri, os.path.relpath(path, local_dir)), handle.read())


def _download_tree(uri: str) -> str:
    local = tempfile.mkdtemp(prefix="poster-model-")
    prefix = uri.rstrip("/") + "/"
    for source in storage.list_files(uri):
        target = os.path.join(local, source[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(storage.read_bytes(source))
    return local


def load_exported_model(uri: str) -> tuple[Callable[[Sequence[bytes]], np.ndarray], dict]:
    """An export (local or gs://) → (embed, meta): `embed(list of encoded images)` → float32 [n, dim] unit rows.

    On gs:// the directory must be published whole (`_SUCCESS`, written last) and is copied to a local
    temporary directory to load (TensorFlow's own gs:// support is optional); locally the publish is one
    rename, so the meta file is enough.
    """
    meta_uri = storage.join(uri, MODEL_META_FILE)
    if not storage.exists(meta_uri) or (storage.is_gcs(uri) and not storage.is_complete(uri)):
        raise ExportError(f"{uri} is not a complete model export (no {MODEL_META_FILE} or _SUCCESS): "
                          "point at the `model/` directory that `posters train` wrote")
    meta = storage.read_json(meta_uri)
    if storage.is_gcs(uri):
        local = _download_tree(uri)
        try:  # loading reads the variables into memory: the copy is not needed afterwards
            signature = tf.saved_model.load(local).signatures[SERVING_SIGNATURE]
        finally:
            shutil.rmtree(local, ignore_errors=True)
    else:
        signature = tf.saved_model.load(uri).signatures[SERVING_SIGNATURE]
    dim = int(meta["dim"])

    def embed(images: Sequence[bytes]) -> np.ndarray:
        images = list(images)
        if not images:
            return np.zeros((0, dim), np.float32)
        result = signature(**{SERVING_INPUT: tf.constant(images, dtype=tf.string)})[SERVING_OUTPUT]
        return result.numpy().astype(np.float32, copy=False)

    return embed, meta
