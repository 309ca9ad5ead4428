"""Tiny exported poster models for tests: the trainer's own `tiny_cnn` model, exported by `trainer.export`.

`export_tiny_model` is a real export (SavedModel + `model_meta.json`, bytes in, unit vectors out) at a small input
size with random weights. `export_jpeg_only_model` is the same model behind a serving function that refuses
anything but JPEG, for tests of what happens when the model fails on a poster that passed validation.
"""
from __future__ import annotations

import json
import os

import keras
import numpy as np
import tensorflow as tf

from pipelines.common.exported_model import load_exported_model, weights_version
from pipelines.config import ModelConfig
from pipelines.contracts import MODEL_META_FILE, SERVING_INPUT, SERVING_SIGNATURE
from trainer.export import PosterServing, export_model
from trainer.model import build_model, embedding_model

GENRES = ["Action", "Comedy", "Drama", "Horror"]


def tiny_embedder(input_size: int, dim: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    config = ModelConfig(backbone="tiny_cnn", weights="none", input_size=input_size, embedding_dim=dim)
    return embedding_model(build_model(config, num_genres=len(GENRES)))


def export_tiny_model(out_dir: str, input_size: int = 32, dim: int = 16, seed: int = 0,
                      pixel_signature: bool = True) -> dict:
    """Exports an untrained `tiny_cnn` poster model to `out_dir`; returns its meta (model_version = weight hash).
    Without `pixel_signature`, an export as made before the pixel signature existed (bytes in only)."""
    return export_model(tiny_embedder(input_size, dim, seed), out_dir, "tiny_cnn", input_size, GENRES,
                        pixel_signature=pixel_signature)


def jpeg_only_serving(embedder: keras.Model, input_size: int) -> tf.Module:
    """The real serving graph behind an assertion that each input starts with the JPEG marker (TF's JPEG
    decoder would read PNG too): a model that fails on PNG posters. Bytes in only, as exports before the pixel
    signature were: embed feeds it the posters' bytes."""
    plain = PosterServing(embedder, input_size, pixel_signature=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=SERVING_INPUT)])
    def serve(image_bytes):
        is_jpeg = tf.debugging.assert_equal(tf.strings.substr(image_bytes, 0, 2), tf.constant(b"\xff\xd8"),
                                            message="not a JPEG")
        with tf.control_dependencies([is_jpeg]):
            image_bytes = tf.identity(image_bytes)
        return plain.serve(image_bytes)

    module = tf.Module()
    module.model_variables, module.serve = plain.model_variables, serve.get_concrete_function()
    return module


def export_jpeg_only_model(out_dir: str, input_size: int = 32, dim: int = 16, seed: int = 0) -> dict:
    module = jpeg_only_serving(tiny_embedder(input_size, dim, seed), input_size)
    tf.saved_model.save(module, out_dir, signatures={SERVING_SIGNATURE: module.serve})
    version = weights_version(module.serve.variables, "tiny_cnn_jpeg_only", input_size)
    meta = {"backbone": "tiny_cnn_jpeg_only", "input_size": input_size, "dim": dim, "metric": "angular",
            "genres": GENRES, "model_version": version}
    with open(os.path.join(out_dir, MODEL_META_FILE), "w") as handle:
        json.dump(meta, handle)
    return meta


def call_exported_model(model_dir: str, images: list[bytes]) -> np.ndarray:
    """The exported model called directly, outside any pipeline: the reference the pipeline must match."""
    embed, _ = load_exported_model(model_dir)
    return embed(images)
