"""The exported model's contract, shared by the trainer (which writes it) and the pipelines (which serve it).

An export is a directory: a SavedModel whose signature `SERVING_SIGNATURE` takes `SERVING_INPUT` (tf.string
[None], encoded images) and returns `SERVING_OUTPUT` (float32 [None, dim], unit vectors), and beside it
`MODEL_META_FILE` (backbone, input_size, dim, metric, genres, model_version, created, signatures). Exports that list
`PIXELS_SIGNATURE` in their meta's `signatures` also take decoded pixels (`PIXELS_INPUT`, uint8 [None, input_size,
input_size, 3], `pipelines.common.pixels.poster_pixels` of the posters) for the same vectors: the embed pipeline
decodes each poster once, in its validator, and feeds those. Loading needs TensorFlow only, not Keras nor the
trainer.

`model_version` is `weights_version` of the serving graph's variables: the trainer computes it when it exports,
and `load_exported_model` recomputes it from the variables it loaded and refuses an export whose weights are not
the ones its meta describes (a model directory with another model's weights, or a meta copied beside them).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tensorflow as tf

from pipelines.common import storage
from pipelines.contracts import (
    EMBEDDING_METRIC,
    MODEL_META_FILE,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    SERVING_INPUT,
    SERVING_OUTPUT,
    SERVING_SIGNATURE,
)


class ExportError(ValueError):
    """An exported model that cannot be used; the message says what is wrong."""


def weights_version(weights: Iterable, backbone: str, input_size: int) -> str:
    """The model_version: a content hash of the weights (each one's shape, dtype and values) and of what shapes the
    input (backbone, input size, metric) — same hash, same vectors.

    `weights` are arrays or variables in any order (the trainer has Keras weights, the loader the SavedModel's
    restored variables, in another order and under other names), so each weight is hashed on its own and the
    sorted digests are hashed together.
    """
    digests = []
    for weight in weights:
        value = np.ascontiguousarray(weight.numpy() if hasattr(weight, "numpy") else np.asarray(weight))
        digest = hashlib.sha256(f"{value.shape}|{value.dtype}|".encode())
        digest.update(value.tobytes())
        digests.append(digest.hexdigest())
    total = hashlib.sha256(f"{backbone}|{int(input_size)}|{EMBEDDING_METRIC}".encode())
    for digest in sorted(digests):
        total.update(digest.encode())
    return total.hexdigest()[:16]


def signature_version(signature, meta: dict) -> str:
    """`weights_version` of the variables a (loaded or traced) serving function uses, with the meta's input."""
    return weights_version(signature.variables, meta["backbone"], int(meta["input_size"]))


def read_model_meta(model_uri: str) -> dict:
    """The exported model's `model_meta.json` (backbone, input_size, dim, metric, genres, model_version), read
    without loading the model; `ExportError` when `model_uri` is not an export."""
    meta_uri = storage.join(model_uri, MODEL_META_FILE)
    if not storage.exists(meta_uri):
        raise ExportError(f"{model_uri} is not a model export (no {MODEL_META_FILE}): point --model at the "
                          "`model/` directory that `posters train` wrote")
    return storage.read_json(meta_uri)


def takes_pixels(meta: dict) -> bool:
    """Whether the export described by `meta` has the pixel signature (exports made before it existed do not)."""
    return PIXELS_SIGNATURE in meta.get("signatures", ())


def _download_tree(uri: str) -> str:
    local = tempfile.mkdtemp(prefix="poster-model-")
    prefix = uri.rstrip("/") + "/"
    for source in storage.list_files(uri):
        target = os.path.join(local, source[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(storage.read_bytes(source))
    return local


def load_exported_model(uri: str, pixels: bool = False) -> tuple[Callable[[Sequence], np.ndarray], dict]:
    """An export (local or gs://) → (embed, meta): `embed(list of encoded images)` → float32 [n, dim] unit rows;
    with `pixels`, `embed(uint8 [n, input_size, input_size, 3] pixels, or a list of such images)` through the
    pixel signature (`ExportError` when the export has none).

    Raises `ExportError` when the loaded weights do not hash to the meta's `model_version`.
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
            loaded = tf.saved_model.load(local)
        finally:
            shutil.rmtree(local, ignore_errors=True)
    else:
        loaded = tf.saved_model.load(uri)
    signature = loaded.signatures[SERVING_SIGNATURE]
    # The signature reaches its variables through the loaded object: `loaded` stays referenced (by `embed`).
    version = signature_version(signature, meta)
    if version != meta.get("model_version"):
        raise ExportError(f"{uri}: the weights are not the ones {MODEL_META_FILE} describes (it says model_version "
                          f"{meta.get('model_version')!r}, the loaded weights hash to {version!r}); re-export the "
                          f"model, or put back the {MODEL_META_FILE} that was written with these weights")
    dim = int(meta["dim"])
    if pixels and PIXELS_SIGNATURE not in loaded.signatures:
        raise ExportError(f"{uri}: the export has no {PIXELS_SIGNATURE!r} signature (decoded pixels in); re-export it "
                          "with this version of `posters train` or `posters export-model`")
    name, key = (PIXELS_SIGNATURE, PIXELS_INPUT) if pixels else (SERVING_SIGNATURE, SERVING_INPUT)

    def embed(images: Sequence) -> np.ndarray:
        if not len(images):
            return np.zeros((0, dim), np.float32)
        batch = np.stack(images) if pixels and not isinstance(images, np.ndarray) else images
        inputs = tf.constant(batch, dtype=tf.uint8) if pixels else tf.constant(list(images), dtype=tf.string)
        result = loaded.signatures[name](**{key: inputs})[SERVING_OUTPUT]
        return result.numpy().astype(np.float32, copy=False)

    return embed, meta
