"""The exported model's contract, shared by the trainer (which writes it) and the pipelines (which serve it).

An export is a directory: a SavedModel whose signature `SERVING_SIGNATURE` takes `SERVING_INPUT` (tf.string
[None], encoded images) and returns `SERVING_OUTPUT` (float32 [None, dim], unit vectors), and beside it
`MODEL_META_FILE` (backbone, input_size, dim, metric, genres, model_version, created). Loading needs TensorFlow
only, not Keras nor the trainer.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from pipelines.common import storage
from pipelines.contracts import MODEL_META_FILE, SERVING_INPUT, SERVING_OUTPUT, SERVING_SIGNATURE


class ExportError(ValueError):
    """An exported model that cannot be used; the message says what is wrong."""


def read_model_meta(model_uri: str) -> dict:
    """The exported model's `model_meta.json` (backbone, input_size, dim, metric, genres, model_version), read
    without loading the model; `ExportError` when `model_uri` is not an export."""
    meta_uri = storage.join(model_uri, MODEL_META_FILE)
    if not storage.exists(meta_uri):
        raise ExportError(f"{model_uri} is not a model export (no {MODEL_META_FILE}): point --model at the "
                          "`model/` directory that `posters train` wrote")
    return storage.read_json(meta_uri)


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
