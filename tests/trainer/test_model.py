"""The poster model: the seed's layers, registered (Lambda-free) preprocessing, the embedding cut, unfreezing."""
import keras
import numpy as np
import pytest
from keras import layers

from pipelines.config import ModelConfig
from trainer.model import batchnorm_frozen, build_model, embedding_model, matches, set_trainable, unfrozen_patterns

TINY = ModelConfig(backbone="tiny_cnn", weights="none", input_size=32, embedding_dim=16)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model(TINY, num_genres=5)


def _pixels(n=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)


def test_layers_are_the_seeds(model):
    names = [layer.name for layer in model.layers]
    assert names == ["pixels", "preprocess", "backbone", "embedding", "logit"]
    embedding, logit = model.get_layer("embedding"), model.get_layer("logit")
    assert (embedding.units, embedding.activation.__name__) == (16, "linear")
    assert logit.units == 5
    assert model(_pixels()).shape == (3, 5)


def test_saved_model_file_loads_in_safe_mode_without_lambdas(model, tmp_path):
    def all_layers(container):
        for layer in container.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from all_layers(layer)

    assert not any(isinstance(layer, layers.Lambda) for layer in all_layers(model))
    path = str(tmp_path / "poster.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(_pixels()), model(_pixels()), atol=1e-6)


def test_uint8_and_float_pixels_give_the_same_logits(model):
    pixels = _pixels()
    np.testing.assert_allclose(model(pixels), model(pixels.astype(np.float32)), atol=1e-6)


def test_embedding_model_gives_unit_vectors_and_shares_weights(model):
    embedder = embedding_model(model)
    vectors = np.asarray(embedder(_pixels()))
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    kernel = model.get_layer("embedding").kernel
    original = kernel.numpy()
    try:
        kernel.assign(-original)  # flipping the shared kernel flips the embedding
        np.testing.assert_allclose(embedder(_pixels()), -vectors, atol=1e-5)
    finally:
        kernel.assign(original)


def test_layer_patterns_match_prefixes_and_block_suffixes():
    assert matches("block_3_conv", ["block_3"])
    assert matches("separable_conv_1_normal_left1_18", ["_18"])
    assert not matches("separable_conv_1_normal_left1_17", ["_18"])
    assert not matches("block_2_conv", ["block_3", "_18"])


def test_unfreeze_schedule_is_cumulative_and_holds_its_last_step():
    schedule = [["block_3"], [], ["block_2"]]
    assert unfrozen_patterns(schedule, 0) == ["block_3"]
    assert unfrozen_patterns(schedule, 1) == ["block_3"]  # an empty step keeps the previous set
    assert unfrozen_patterns(schedule, 2) == ["block_3", "block_2"]
    assert unfrozen_patterns(schedule, 9) == ["block_3", "block_2"]
    assert unfrozen_patterns([], 0) == []


def test_set_trainable_unfreezes_by_pattern_and_keeps_batch_norm_frozen(model):
    trainable = set_trainable(model, ["block_3", "block_2"])
    assert trainable == ["block_2_conv", "block_3_conv"]
    names = {weight.path for weight in model.trainable_weights}
    assert names == {"block_2_conv/kernel", "block_3_conv/kernel", "embedding/kernel", "embedding/bias",
                     "logit/kernel", "logit/bias"}
    backbone = model.get_layer("backbone")
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer, layers.BatchNormalization))
    assert set_trainable(model, []) == []  # heads only
    assert len(model.trainable_weights) == 4


def test_batch_norm_trains_where_selected_unless_frozen(model):
    """From random weights BatchNormalization must train: frozen, its initial statistics normalise nothing."""
    assert set_trainable(model, ["block_3"], freeze_batchnorm=False) == ["block_3_conv", "block_3_bn"]
    backbone = model.get_layer("backbone")
    assert backbone.get_layer("block_3_bn").trainable and not backbone.get_layer("block_2_bn").trainable
    assert {"block_3_bn/gamma", "block_3_bn/beta"} <= {weight.path for weight in model.trainable_weights}
    assert set_trainable(model, ["block_3"], freeze_batchnorm=True) == ["block_3_conv"]


@pytest.mark.parametrize("weights, setting, frozen", [
    ("none", "auto", False), ("imagenet", "auto", True), ("/models/tiny.weights.h5", "auto", True),
    ("none", True, True), ("imagenet", False, False),
])
def test_batch_norm_is_frozen_by_default_only_on_pretrained_weights(weights, setting, frozen):
    assert batchnorm_frozen(ModelConfig(weights=weights, freeze_batchnorm=setting)) is frozen
