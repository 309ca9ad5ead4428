"""The backbone registry: every backbone builds and pools, with its own preprocessing and any weights source.

NASNetLarge, the seed's production backbone, gets the one slow test (about a minute on 2 cores): the seed's
config asks for 331×331; the network is built at 32×32, the smallest input NASNetLarge accepts (its layers and
weights do not depend on the input size; only the pixels to push through do), takes the seed's unfreeze
schedule, embeds a poster and exports.
"""
import json
import os
import subprocess
import sys
import typing

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines.common.exported_model import load_exported_model
from pipelines.config import BackboneName, load_config
from trainer.backbones import BACKBONES, BackboneError, BackbonePreprocess, build_backbone
from trainer.export import export_model
from trainer.model import build_model, embedding_model, set_trainable, unfrozen_patterns

SMALL_BACKBONES = [name for name in BACKBONES if name != "nasnet_large"]
SUBPROCESS_TIMEOUT_S = 600  # generous: only a hang gets there, and it must not stall CI
NASNET_LARGE_SMALLEST_INPUT = 32  # keras.applications.NASNetLarge without ImageNet weights: 32×32 and up
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", SMALL_BACKBONES)
def test_backbone_pools_each_image_to_one_feature_vector(name):
    network = build_backbone(name, 32, "none")
    preprocessed = BackbonePreprocess(name)(np.full((2, 32, 32, 3), 128, np.uint8))
    features = network(preprocessed)
    assert len(features.shape) == 2 and features.shape[0] == 2 and features.shape[1] >= 32


@pytest.mark.parametrize("name, low, high", [("nasnet_large", -1.0, 1.0), ("nasnet_mobile", -1.0, 1.0),
                                             ("tiny_cnn", -1.0, 1.0),
                                             # these two rescale inside the network: identity here
                                             ("efficientnet_v2_b0", 0.0, 255.0), ("mobilenet_v3_small", 0.0, 255.0)])
def test_preprocess_layer_applies_the_backbones_own_preprocess_input(name, low, high):
    pixels = np.array([[[[0, 255, 0]]]], np.uint8)
    np.testing.assert_allclose(BackbonePreprocess(name)(pixels), [[[[low, high, low]]]], atol=1e-6)


def test_preprocess_layer_deserialises_in_safe_mode():
    config = keras.layers.serialize(BackbonePreprocess("nasnet_mobile", name="preprocess"))
    layer = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert (layer.backbone, layer.name) == ("nasnet_mobile", "preprocess")


def test_weights_file_is_loaded(tmp_path):
    keras.utils.set_random_seed(1)
    trained = build_backbone("tiny_cnn", 32, "none")
    path = str(tmp_path / "tiny.weights.h5")
    trained.save_weights(path)
    keras.utils.set_random_seed(2)
    loaded = build_backbone("tiny_cnn", 32, path)
    for expected, actual in zip(trained.weights, loaded.weights):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())


def test_missing_weights_file_names_the_path(tmp_path):
    with pytest.raises(BackboneError, match="no weights file at .*absent.weights.h5"):
        build_backbone("tiny_cnn", 32, str(tmp_path / "absent.weights.h5"))


def test_unknown_backbone_and_imagenet_for_tiny_cnn_are_user_errors():
    with pytest.raises(BackboneError, match="choose one of .*nasnet_large"):
        build_backbone("resnet_9000", 32)
    with pytest.raises(BackboneError, match="tiny_cnn has no ImageNet weights"):
        build_backbone("tiny_cnn", 32, "imagenet")


# Keras reads KERAS_HOME once, at import: a fresh process is the way to point its weights cache elsewhere.
_BUILD_WITH_IMAGENET_WEIGHTS = """
import sys
from trainer.backbones import BackboneError, build_backbone
try:
    build_backbone("mobilenet_v3_small", 224, "imagenet")
except BackboneError as err:
    print(err)
    sys.exit(0)
sys.exit("built: the ImageNet weights were found after all")
"""


def test_imagenet_weights_that_cannot_be_downloaded_say_where_to_put_them(tmp_path):
    # An empty KERAS_HOME holds no cached weights; a proxy on a closed port makes the download fail fast, with or
    # without network access.
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        env[variable] = "http://127.0.0.1:9"
    for variable in ("no_proxy", "NO_PROXY"):
        env.pop(variable, None)
    completed = subprocess.run([sys.executable, "-c", _BUILD_WITH_IMAGENET_WEIGHTS], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert completed.returncode == 0, completed.stderr[-3000:]
    message = completed.stdout.strip().splitlines()[-1]  # after Keras' own "Downloading data from …"
    assert message.startswith("could not get the ImageNet weights of mobilenet_v3_small"), message
    assert f"into {tmp_path / 'keras' / 'models'};" in message and "model.weights" in message, message


def test_nasnet_large_builds_takes_the_seed_schedule_embeds_and_exports(tmp_path):
    config = load_config("configs/nasnet_large.yaml", ["model.weights=none"])
    assert (config.model.backbone, config.model.input_size) == ("nasnet_large", 331)
    size = NASNET_LARGE_SMALLEST_INPUT
    model = build_model(config.model.model_copy(update={"input_size": size}), num_genres=5)

    # The seed's schedule: cell _18 first, then one cell further down per warm-up epoch. Each NASNet normal cell
    # holds 12 layers with weights besides BatchNormalization (2 plain convs and 10 separable convs).
    seed_schedule = [["_18"], ["_17"], ["_16"], ["_15"]]
    counts = [len(set_trainable(model, unfrozen_patterns(seed_schedule, epoch))) for epoch in range(4)]
    assert counts == [12, 24, 36, 48]
    trainable = set_trainable(model, unfrozen_patterns(seed_schedule, 0))
    assert all(name.endswith("_18") and "_bn_" not in name for name in trainable)
    heads = {"embedding/kernel", "embedding/bias", "logit/kernel", "logit/bias"}
    assert heads <= {weight.path for weight in model.trainable_weights}

    embedder = embedding_model(model)
    poster = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype(np.uint8)
    vector = np.asarray(embedder(poster, training=False))
    assert vector.shape == (1, 128)
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-5)

    out = str(tmp_path / "model")
    meta = export_model(embedder, out, "nasnet_large", size, ["A", "B", "C", "D", "E"])
    assert os.path.exists(os.path.join(out, "saved_model.pb"))
    with open(os.path.join(out, "model_meta.json")) as handle:
        assert json.load(handle) == meta
    assert (meta["backbone"], meta["input_size"], meta["dim"], meta["metric"]) == ("nasnet_large", size, 128, "angular")
    # The export serves encoded bytes: the same poster as a PNG (already at the input size, so not resized) gives
    # the vector.
    embed, loaded_meta = load_exported_model(out)
    assert loaded_meta == meta
    np.testing.assert_allclose(embed([tf.io.encode_png(poster[0]).numpy()]), vector, atol=1e-5)


def test_the_configs_backbone_names_are_the_registrys():
    """pipelines/config.py may not import the trainer, so it names the backbones itself: they must agree."""
    assert set(typing.get_args(BackboneName)) == set(BACKBONES)
