"""The backbone registry: every image network the trainer can put under the embedding, with its own preprocessing.

A backbone maps a float image batch, already passed through its own `preprocess_input`, to one pooled feature
vector per image (global average pooling). `BackbonePreprocess` is that `preprocess_input` as a registered
layer, so saved models load without `Lambda` layers (Keras 3 refuses those in safe mode).

Weights (`model.weights`): `imagenet` (Keras downloads them into its cache, ~/.keras/models, once; what cloud
users run), `none` (random initialisation), or the path of a weights file for the backbone (an air-gapped
machine: copy Keras' `*_no_top.h5` file there, or any `.weights.h5` saved from the same backbone).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers

from pipelines.common import storage

BACKBONE_LAYER = "backbone"  # the name of the backbone inside the poster model


class BackboneError(ValueError):
    """A backbone or weights setting the user must change; the message says how."""


@dataclass(frozen=True)
class Backbone:
    name: str
    native_input_size: int  # the size its ImageNet weights were trained at
    application: Callable[..., keras.Model] | None  # a keras.applications constructor; None: built here
    preprocess_input: Callable  # pixels in [0, 255] → what the network expects
    # A regular expression whose group is a layer's block in `train.unfreeze_schedule` terms (a prefix such as
    # `block_3`, or NASNet's cell suffix `_18`): the names an error about a schedule lists.
    block_pattern: str


def _to_minus_one_one(images):
    """The "tf" convention of NASNet and Inception: [0, 255] → [-1, 1]."""
    return images / 127.5 - 1.0


def _tiny_cnn(input_size: int) -> keras.Model:
    """Three stride-2 conv blocks for tests and the CPU demo; layer names `block_<n>_…` for the unfreeze schedule.

    Each block has a BatchNormalization so the "BatchNormalization stays frozen" rule is exercised here too.
    """
    images = keras.Input((input_size, input_size, 3), name="pixels")
    x = images
    for block, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"block_{block}_conv")(x)
        x = layers.BatchNormalization(name=f"block_{block}_bn")(x)
        x = layers.ReLU(name=f"block_{block}_relu")(x)
    features = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, features, name=BACKBONE_LAYER)


BACKBONES = {
    backbone.name: backbone
    for backbone in (
        Backbone("nasnet_large", 331, keras.applications.NASNetLarge, keras.applications.nasnet.preprocess_input,
                 r"(_\d+)$"),
        Backbone("nasnet_mobile", 224, keras.applications.NASNetMobile, keras.applications.nasnet.preprocess_input,
                 r"(_\d+)$"),
        # EfficientNetV2 and MobileNetV3 rescale inside the network; their preprocess_input is the identity.
        Backbone("efficientnet_v2_b0", 224, keras.applications.EfficientNetV2B0,
                 keras.applications.efficientnet_v2.preprocess_input, r"^(block\d+)[a-z]_"),
        Backbone("mobilenet_v3_small", 224, keras.applications.MobileNetV3Small,
                 keras.applications.mobilenet_v3.preprocess_input, r"^(expanded_conv(?:_\d+)?)_"),
        Backbone("tiny_cnn", 64, None, _to_minus_one_one, r"^(block_\d+)_"),
    )
}


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise BackboneError(f"model.backbone is {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def build_backbone(name: str, input_size: int, weights: str = "none") -> keras.Model:
    """A backbone network: float images [B, input_size, input_size, 3] (after `BackbonePreprocess`) → [B, features].

    `weights`: "imagenet", "none", or a local/gs:// path of a weights file for this backbone.
    """
    backbone = get_backbone(name)
    if weights == "imagenet" and backbone.application is None:
        raise BackboneError(f"{name} has no ImageNet weights; set model.weights to none or a weights file")
    if backbone.application is None:
        network = _tiny_cnn(input_size)
    else:
        network = _application(backbone, input_size, "imagenet" if weights == "imagenet" else None)
    if weights not in ("imagenet", "none"):
        load_weights_file(network, weights)
    return network


def _application(backbone: Backbone, input_size: int, weights: str | None) -> keras.Model:
    try:
        network = backbone.application(include_top=False, weights=weights, input_shape=(input_size, input_size, 3),
                                       pooling="avg")
        # Renamed afterwards: EfficientNetV2 looks its architecture up by the `name` argument.
        network.name = BACKBONE_LAYER
        return network
    except ValueError as err:  # Keras' own message, e.g. NASNetLarge's ImageNet weights need 331×331
        raise BackboneError(f"{backbone.name} at {input_size}×{input_size} with weights={weights}: {err}") from err
    except Exception as err:  # the download failed: no network, a proxy, a firewall
        if weights != "imagenet":
            raise
        raise BackboneError(
            f"could not get the ImageNet weights of {backbone.name} ({type(err).__name__}: {err}). Keras downloads "
            f"them once into {_keras_cache()}; on a machine without network access copy the no-top weights file "
            "there, or set model.weights to the path of the file") from err


def _keras_cache() -> str:
    return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")


def load_weights_file(network: keras.Model, uri: str) -> None:
    """Loads a weights file (Keras `.weights.h5`, or a legacy `.h5` such as Keras' no-top ImageNet files)."""
    if not storage.exists(uri):
        raise BackboneError(f"model.weights: no weights file at {uri} (or use imagenet or none)")
    suffix = ".weights.h5" if uri.endswith(".weights.h5") else os.path.splitext(uri)[1]
    with tempfile.TemporaryDirectory() as local_dir:
        local = uri
        if storage.is_gcs(uri):  # Keras reads local files only
            local = os.path.join(local_dir, f"weights{suffix}")
            with open(local, "wb") as handle:
                handle.write(storage.read_bytes(uri))
        try:
            network.load_weights(local)
        except (ValueError, KeyError) as err:
            raise BackboneError(f"model.weights: {uri} does not fit backbone {network.name}: {err}") from err


@keras.saving.register_keras_serializable(package="posters")
class BackbonePreprocess(layers.Layer):
    """Pixels in [0, 255] (uint8 or float) → the input its backbone expects, by the backbone's preprocess_input."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self._preprocess_input = get_backbone(backbone).preprocess_input

    def call(self, images):
        return self._preprocess_input(keras.ops.cast(images, self.compute_dtype))

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}
