"""The exported model's contract: the loader recomputes model_version from the weights it loaded (issue row 3)."""
import json
import os
import shutil

import numpy as np
import pytest

from pipelines.common.exported_model import ExportError, load_exported_model, weights_version
from pipelines.contracts import MODEL_META_FILE
from tests.pipelines.embed.tiny_model import export_tiny_model, tiny_embedder
from trainer.export import model_version


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [(str(root / name), export_tiny_model(str(root / name), input_size=16, dim=8, seed=seed))
            for name, seed in (("a", 0), ("b", 1))]


def test_the_trainer_and_the_loader_agree_on_model_version(two_models):
    (path, meta), _ = two_models
    assert load_exported_model(path)[1]["model_version"] == meta["model_version"]
    assert meta["model_version"] == model_version(tiny_embedder(16, 8, 0), "tiny_cnn", 16)


def test_weights_version_ignores_order_and_names_but_not_values():
    weights = [np.zeros((3, 2), np.float32), np.ones(4, np.float32)]
    assert weights_version(weights, "tiny_cnn", 16) == weights_version(weights[::-1], "tiny_cnn", 16)
    changed = [weights[0], weights[1] + 1e-6]
    assert weights_version(changed, "tiny_cnn", 16) != weights_version(weights, "tiny_cnn", 16)
    assert weights_version(weights, "tiny_cnn", 32) != weights_version(weights, "tiny_cnn", 16)


def test_another_models_weights_beside_the_meta_are_refused_in_one_line(two_models, tmp_path):
    (path_a, meta_a), (path_b, _) = two_models
    mixed = tmp_path / "mixed"
    shutil.copytree(path_b, mixed)
    shutil.copy(os.path.join(path_a, MODEL_META_FILE), mixed / MODEL_META_FILE)
    with pytest.raises(ExportError) as caught:
        load_exported_model(str(mixed))
    message = str(caught.value)
    assert "\n" not in message and meta_a["model_version"] in message and "weights are not the ones" in message


def test_a_meta_whose_model_version_was_edited_is_refused(two_models, tmp_path):
    path, meta = two_models[0]
    edited = tmp_path / "edited"
    shutil.copytree(path, edited)
    (edited / MODEL_META_FILE).write_text(json.dumps({**meta, "model_version": "0123456789abcdef"}))
    with pytest.raises(ExportError, match="0123456789abcdef"):
        load_exported_model(str(edited))
