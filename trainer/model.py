"""The poster model as the seed has it, the cuts the trainer and export use, and which layers train when.

    pixels [0, 255] → BackbonePreprocess → backbone (global average pooling) → Dense(dim, "embedding")
                    → Dense(num_genres, "logit")

Phase 1 trains the whole thing on the logits; phase 2 and the export use `embedding_model`, the same layers cut
at `embedding` and L2-normalised (Keras' own `UnitNormalization`, a registered layer: no `Lambda`).
"""
from __future__ import annotations

import re

import keras
import tensorflow as tf
from keras import layers

from pipelines.config import ModelConfig
from trainer.backbones import BACKBONE_LAYER, BackboneError, BackbonePreprocess, build_backbone, get_backbone
from trainer.distribute import gather_global_batch

EMBEDDING_LAYER = "embedding"
LOGIT_LAYER = "logit"
HEAD_LAYERS = (EMBEDDING_LAYER, LOGIT_LAYER)


def build_model(config: ModelConfig, num_genres: int) -> keras.Model:
    """The genre classifier: float or uint8 pixels [B, size, size, 3] in [0, 255] → genre logits [B, num_genres]."""
    size = config.input_size
    pixels = keras.Input((size, size, 3), name="pixels")
    x = BackbonePreprocess(config.backbone, name="preprocess")(pixels)
    features = build_backbone(config.backbone, size, config.weights)(x)
    embedding = layers.Dense(config.embedding_dim, name=EMBEDDING_LAYER)(features)
    logits = layers.Dense(num_genres, name=LOGIT_LAYER)(embedding)
    return keras.Model(pixels, logits, name=f"poster_{config.backbone}")


def embedding_model(model: keras.Model) -> keras.Model:
    """`model` cut at `embedding`, L2-normalised: pixels → unit vectors [B, dim]. Shares `model`'s weights."""
    embedding = model.get_layer(EMBEDDING_LAYER).output
    return keras.Model(model.input, layers.UnitNormalization(name="l2_normalize")(embedding),
                       name=f"{model.name}_embedding")


def backbone_features_model(model: keras.Model) -> keras.Model:
    """`model` cut below the heads: pixels → the backbone's pooled features, L2-normalised (the baseline)."""
    features = model.get_layer(EMBEDDING_LAYER).input
    return keras.Model(model.input, layers.UnitNormalization(name="l2_normalize")(features),
                       name=f"{model.name}_features")


# --- progressive unfreezing ---------------------------------------------------------------------------------

def unfrozen_patterns(schedule: list[list[str]], epoch: int) -> list[str]:
    """The layer-name patterns trainable in warm-up `epoch` (0-based): every schedule step up to it, cumulative.

    Epochs past the end of the schedule keep its last set; an empty step keeps the previous set.
    """
    return [pattern for step in schedule[:epoch + 1] for pattern in step]


def matches(layer_name: str, patterns: list[str]) -> bool:
    """A pattern selects a layer whose name starts with it (`block_3`) or ends with it (NASNet's cell `_18`)."""
    return any(layer_name.startswith(p) or layer_name.endswith(p) for p in patterns)


def batchnorm_frozen(config: ModelConfig) -> bool:
    """`model.freeze_batchnorm`, with auto resolved: frozen when the backbone starts from pretrained weights."""
    if config.freeze_batchnorm == "auto":
        return config.weights != "none"
    return config.freeze_batchnorm


def set_trainable(model: keras.Model, patterns: list[str], freeze_batchnorm: bool = True) -> list[str]:
    """Makes the heads and the backbone layers selected by `patterns` trainable, everything else frozen.

    With `freeze_batchnorm` BatchNormalization stays frozen even where selected (in Keras 3 a frozen BN layer also
    runs in inference mode, so pretrained statistics survive small fine-tuning batches); without it a selected BN
    layer trains (batch statistics), as a backbone from random weights needs. Returns the names of the trainable
    backbone layers that hold weights.
    """
    model.trainable = True
    backbone = model.get_layer(BACKBONE_LAYER)
    trainable = []
    for layer in _leaf_layers(backbone):
        frozen_kind = freeze_batchnorm and isinstance(layer, layers.BatchNormalization)
        layer.trainable = matches(layer.name, patterns) and not frozen_kind
        if layer.trainable and layer.weights:
            trainable.append(layer.name)
    for name in HEAD_LAYERS:
        model.get_layer(name).trainable = True
    return trainable


def check_unfreeze_schedule(backbone: keras.Model, backbone_name: str, schedule: list[list[str]]) -> None:
    """Refuses (BackboneError) a schedule pattern that selects no layer of `backbone` (the network itself, or
    the poster model holding it), naming the backbone's blocks."""
    if BACKBONE_LAYER in [layer.name for layer in backbone.layers]:
        backbone = backbone.get_layer(BACKBONE_LAYER)
    names = [layer.name for layer in _leaf_layers(backbone) if layer.weights]
    unmatched = [p for step in schedule for p in step if not any(matches(name, [p]) for name in names)]
    if unmatched:
        blocks = backbone_blocks(names, get_backbone(backbone_name).block_pattern)
        raise BackboneError(f"train.unfreeze_schedule: {', '.join(map(repr, dict.fromkeys(unmatched)))} matches no "
                            f"layer of {backbone_name}; its blocks are {_shortened(blocks)} (a pattern selects the "
                            "layers whose names start or end with it)")


def backbone_blocks(layer_names: list[str], block_pattern: str) -> list[str]:
    """The distinct blocks `block_pattern` finds in `layer_names`, in the order of their numbers."""
    found = {match.group(1) for match in (re.search(block_pattern, name) for name in layer_names) if match}
    return sorted(found, key=lambda block: ([int(n) for n in re.findall(r"\d+", block)], block))


def _shortened(blocks: list[str], most: int = 8) -> str:
    if len(blocks) <= most:
        return ", ".join(blocks)
    return ", ".join(blocks[:most // 2]) + f", … ({len(blocks) - most} more), " + ", ".join(blocks[-most // 2:])


def _leaf_layers(container: keras.Model) -> list[layers.Layer]:
    leaves = []
    for layer in container.layers:
        leaves.extend(_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return leaves


# --- phase 2 ------------------------------------------------------------------------------------------------

class MetricLearner(keras.Model):
    """Trains `embedder` with a triplet loss mined over the global batch, not per replica.

    `loss_fn(targets, embeddings)` gets every replica's examples (all-gathered), so the semi-hard negative of an
    anchor may sit on another replica. Every replica computes the same global loss; it is divided by the
    number of replicas because the gather's gradient already sums over replicas and the optimizer sums the
    replicas' gradients once more — the update equals one-device training on the same global batch.
    Not saved as such: the export takes `embedder`.
    """

    def __init__(self, embedder: keras.Model, loss_fn, **kwargs):
        super().__init__(**kwargs)
        self.embedder = embedder
        self.loss_fn = loss_fn
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True  # its weights are the (built) embedder's

    def call(self, pixels, training=False):
        return self.embedder(pixels, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def train_step(self, data):
        pixels, targets = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            embeddings = self.embedder(pixels, training=True)
            all_targets, all_embeddings = gather_global_batch(targets, embeddings)
            loss = self.loss_fn(all_targets, all_embeddings)
            replica_share = loss / replicas
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(replica_share, variables), variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}
