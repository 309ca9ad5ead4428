"""The model export: a SavedModel from encoded poster bytes to L2-normalised embeddings, plus `model_meta.json`.

The serving signature `SERVING_SIGNATURE` takes `SERVING_INPUT` (tf.string [None], encoded images in any
format TensorFlow decodes) and returns `SERVING_OUTPUT` (float32 [None, dim], unit vectors). It decodes and
resizes with `pipelines.common.pixels.poster_pixels`, the very function the preprocess used for the training data,
then runs the embedding model (which holds the backbone's own preprocessing), so serving sees the training
pixels. A second signature `PIXELS_SIGNATURE` takes those pixels already decoded (`PIXELS_INPUT`, uint8 [None,
input_size, input_size, 3]) for the same vectors: the embed pipeline decodes each poster once, in its validator,
with `poster_pixels`, and feeds it. The directory is self-sufficient: loading needs TensorFlow only, not this
package nor Keras.

`model_meta.json`: backbone, input_size, dim, metric, genres (the vocabulary), model_version (a content hash
of the weights and of what shapes the input: `pipelines.common.exported_model.weights_version`, which the loader
recomputes to refuse weights the meta does not describe), created (UTC), signatures (the signature names; a loader
feeds pixels only to an export that lists `PIXELS_SIGNATURE`). The directory is published whole (`_SUCCESS`).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from pipelines.common import storage
from pipelines.common.command_line import command_parser, parse_command
from pipelines.common.exported_model import weights_version
from pipelines.common.pixels import poster_pixels
from pipelines.config import ConfigError
from pipelines.contracts import (
    EMBEDDING_METRIC,
    MODEL_META_FILE,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    SERVING_INPUT,
    SERVING_OUTPUT,
    SERVING_SIGNATURE,
)


class PosterServing(tf.Module):
    """What the SavedModel holds: the embedding model's variables behind a bytes-in serving function (and, with
    `pixel_signature`, a pixels-in one).

    Each function is traced once, here, and held as its concrete function: `tf.saved_model.save` saves those as
    they are, where it would trace a `tf.function` attribute again (under its save context). The module tracks the
    model's variables, not the Keras model: as a tracked child, the save would trace Keras'
    `_default_save_signature` of the model and of every nested functional model (whole-model traces that nothing
    serves) and walk every layer's attributes; the functions close over the model instead.

    It tracks the backend's variables under the Keras ones (`keras.Variable.value`: a `tf.Variable`, or a
    distributed one under a tf.distribute strategy), which are what the functions capture: a tracked Keras variable
    is copied into the save's graph twice (its own `tf.Variable` wrapped around the backend one's copy), so
    NASNetLarge's 1,546 variables cost 3,092 copies and ~3 CPU s more to save. The SavedModel holds the same values
    and loads the same way (`pipelines.common.exported_model`).
    """

    def __init__(self, embedder: keras.Model, input_size: int, pixel_signature: bool = True):
        super().__init__()
        self.input_size = input_size
        self.model_variables = [variable.value for variable in embedder.variables]

        def embed_pixels(pixels):
            return {SERVING_OUTPUT: embedder(pixels, training=False)}

        def serve(image_bytes):
            pixels = tf.map_fn(lambda data: poster_pixels(data, input_size), image_bytes,
                               fn_output_signature=tf.TensorSpec([input_size, input_size, 3], tf.uint8))
            return embed_pixels(pixels)

        self.serve = tf.function(serve).get_concrete_function(tf.TensorSpec([None], tf.string, name=SERVING_INPUT))
        if pixel_signature:
            self.embed_pixels = tf.function(embed_pixels).get_concrete_function(
                tf.TensorSpec([None, input_size, input_size, 3], tf.uint8, name=PIXELS_INPUT))


def model_version(embedder: keras.Model, backbone: str, input_size: int) -> str:
    """Content hash of the weights and of the input definition (`exported_model.weights_version`, the function the
    loader checks exports with): same hash, same vectors."""
    return weights_version((keras.ops.convert_to_numpy(weight) for weight in embedder.weights), backbone, input_size)


def export_model(embedder: keras.Model, out_uri: str, backbone: str, input_size: int, genres: list[str],
                 extra_meta: dict | None = None, pixel_signature: bool = True) -> dict:
    """Writes the SavedModel and `model_meta.json` to `out_uri` (local or gs://), replacing it whole.

    `embedder` maps pixels [B, size, size, 3] in [0, 255] to unit vectors [B, dim]. Returns the meta.
    `pixel_signature` adds `PIXELS_SIGNATURE` (decoded pixels in: what the embed pipeline feeds), at the cost of a
    second trace of the graph; without it (an export for bytes-in callers only) embed lets the serving graph decode.
    """
    module = PosterServing(embedder, input_size, pixel_signature)
    signatures = {SERVING_SIGNATURE: module.serve}
    if pixel_signature:
        signatures[PIXELS_SIGNATURE] = module.embed_pixels
    meta = {
        "backbone": backbone,
        "input_size": int(input_size),
        "dim": int(embedder.output.shape[-1]),
        "metric": EMBEDDING_METRIC,
        "genres": list(genres),
        # Of the variables the serving graph uses, as the loader recomputes it (for a Keras model whose weights
        # all serve, the same as `model_version(embedder, …)`).
        "model_version": weights_version(module.serve.variables, backbone, input_size),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "signatures": sorted(signatures),
        **(extra_meta or {}),
    }
    staging = storage.staging_uri(out_uri)
    local = staging if not storage.is_gcs(out_uri) else tempfile.mkdtemp(prefix="poster-export-")
    try:
        tf.saved_model.save(module, local, signatures=signatures)
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


def main(argv: list[str]) -> int:
    """`posters export-model --out URI`: the config's model with its initial weights (`model.weights`), untrained,
    exported exactly as `posters train` exports: for benchmarks and smoke tests of the serving path."""
    parser = command_parser("export-model", "export the config's model untrained (initial weights), as train does")
    parser.add_argument("--out", required=True, help="model directory to write (local or gs://)")
    parser.add_argument("--genres", type=int, default=8, help="size of the placeholder genre head (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
    try:
        args, config, _ = parse_command(parser, argv)
    except ConfigError as err:
        parser.exit(2, f"posters export-model: {err}\n")
    from trainer.backbones import BackboneError
    from trainer.model import build_model, embedding_model

    keras.utils.set_random_seed(args.seed)
    try:
        embedder = embedding_model(build_model(config.model, num_genres=args.genres))
    except BackboneError as err:
        parser.exit(2, f"posters export-model: {err}\n")
    meta = export_model(embedder, args.out, config.model.backbone, config.model.input_size,
                        [f"genre_{i}" for i in range(args.genres)], extra_meta={"trained": False})
    print(f"exported {config.model.backbone} at {config.model.input_size}px (untrained, model_version "
          f"{meta['model_version']}) to {args.out}")
    return 0
