"""The phase-2 gate and the end-to-end contract: a real `posters preprocess` output of a generated catalog,
trained by `posters train` with configs/local.yaml (fewer epochs: `EPOCHS`), and the hand-made fixture
(tests/trainer/fixtures.py) held to the layout that the real output has.

Sizes, measured on 2 busy CPU cores (catalog seed, then precision@10 of baseline / colour histogram / phase 1 /
phase 2, phase 2's lead over the best of the others):
800 posters at 32 px, 8 warm-up and 10 metric-learning epochs (`EPOCHS`), seeds 1–5: phase 2 ahead by 0.054–0.085
(seed 3: 0.550 / 0.617 / 0.679 / 0.737, lead 0.058; train ~20 CPU s). With local.yaml's 15 and 30 (early stopping
ended phase 2 after 20–27) the lead was 0.074–0.115 for ~31 CPU s; with 15 and 10, 0.051–0.103. At 300–400 posters
(58–80 eval queries) and local.yaml's epochs the lead was −0.005 to +0.10 across seeds: too noisy to gate on.
"""
import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from pipelines.common.catalog import read_catalog
from pipelines.common.exported_model import load_exported_model
from pipelines.common.pixels import poster_pixels
from pipelines.config import load_config
from pipelines.contracts import (
    EVAL_METRICS_FILE,
    GENRE_VOCABULARY_NAME,
    STATS_FILE,
    TRAIN_MODEL_DIR,
    TRAIN_SUMMARY_FILE,
)
from pipelines.preprocess import pipeline as preprocess
from pipelines.synthetic.catalog import generate_catalog
from tests.trainer.fixtures import write_preprocess_output
from trainer import train
from trainer.data import read_genre_vocabulary, read_split

CATALOG_SIZE = 800
CATALOG_SEED = 3
INPUT_SIZE = 32
EPOCHS = ["--set", "train.warmup_epochs=8", "--set", "train.metric_epochs=10"]  # the sizes measured above
LOCAL_RUN = ["--config", "configs/local.yaml", "--set", f"model.input_size={INPUT_SIZE}"]
SERVING_TOLERANCE = 1e-4  # on unit-norm embeddings


def _read_json(path):
    with open(path) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """generate-catalog → preprocess → train, as a user runs them; the directories of each step."""
    root = tmp_path_factory.mktemp("quality")
    generate_catalog(root / "catalog", n=CATALOG_SIZE, seed=CATALOG_SEED, width=64, height=96)
    data, out = str(root / "data"), str(root / "out")
    with contextlib.redirect_stdout(io.StringIO()):
        assert preprocess.main([*LOCAL_RUN, "--catalog", str(root / "catalog" / "catalog.csv"), "--out", data]) == 0
        assert train.main([*LOCAL_RUN, *EPOCHS, "--data", data, "--out", out]) == 0
    return {"root": root, "data": data, "out": out}


def test_metric_learning_beats_the_baseline_and_the_warm_up(trained):
    metrics = _read_json(os.path.join(trained["out"], EVAL_METRICS_FILE))
    precision = {name: metrics[name]["precision_at_10"] for name in ("baseline", "colour_histogram", "phase1",
                                                                     "phase2")}
    assert precision["phase2"] > max(precision["baseline"], precision["phase1"]), precision
    assert metrics["gate"]["checked"] and metrics["gate"]["passed"]  # the run passes the default gate


def test_the_trainer_reads_every_example_and_genre_the_preprocess_wrote(trained):
    stats = _read_json(os.path.join(trained["data"], STATS_FILE))
    summary = _read_json(os.path.join(trained["out"], TRAIN_SUMMARY_FILE))
    vocabulary = tft.TFTransformOutput(trained["data"]).vocabulary_by_name(GENRE_VOCABULARY_NAME)
    assert summary["genres"] == [genre.decode() for genre in vocabulary]
    assert (summary["train_examples"], summary["eval_examples"]) == (stats["train_examples"], stats["eval_examples"])
    embed, meta = load_exported_model(os.path.join(trained["out"], TRAIN_MODEL_DIR))
    posters = read_split(trained["data"], "eval", summary["genres"], INPUT_SIZE).images[:4]
    vectors = embed(list(posters))
    assert vectors.shape == (4, meta["dim"]) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_serving_the_raw_poster_embeds_it_as_the_training_pixels_do(trained):
    """The exported model, given a catalog poster's raw bytes, sees the pixels that preprocess wrote for training."""
    summary = _read_json(os.path.join(trained["out"], TRAIN_SUMMARY_FILE))
    evaluation = read_split(trained["data"], "eval", summary["genres"], INPUT_SIZE)
    catalog = read_catalog(str(trained["root"] / "catalog" / "catalog.csv"), load_config("configs/local.yaml").catalog)
    poster_of = {row.title_id: row.poster_uri for row in catalog}
    picks = range(0, len(evaluation), len(evaluation) // 4)[:4]
    raw = []
    for i in picks:
        with open(poster_of[evaluation.title_ids[i].decode()], "rb") as handle:
            raw.append(handle.read())
    training_pngs = [evaluation.images[i] for i in picks]
    assert all(image[:2] == b"\xff\xd8" for image in raw)  # JPEGs at 64×96: decoded and resized when served

    for original, png in zip(raw, training_pngs):
        training_pixels = tf.io.decode_png(png, channels=3).numpy()
        # The serving graph's resize of an image already at the input size leaves it as it is, so serving the
        # training PNG feeds the embedder exactly the training pixels.
        np.testing.assert_array_equal(poster_pixels(png, INPUT_SIZE).numpy(), training_pixels)
        np.testing.assert_array_equal(poster_pixels(original, INPUT_SIZE).numpy(), training_pixels)
    embed, _ = load_exported_model(os.path.join(trained["out"], TRAIN_MODEL_DIR))
    served, trained_on = embed(raw), embed(training_pngs)
    assert np.abs(served[:, None] - served[None]).max() > 10 * SERVING_TOLERANCE  # distinct posters, distinct vectors
    np.testing.assert_allclose(served, trained_on, atol=SERVING_TOLERANCE)


def test_the_hand_made_fixture_has_the_layout_of_a_real_preprocess_output(trained):
    real = trained["data"]
    genres = read_genre_vocabulary(real)
    fixture = write_preprocess_output(str(trained["root"] / "fixture"), genres=tuple(genres), size=INPUT_SIZE)
    assert read_genre_vocabulary(fixture) == genres
    assert (tft.TFTransformOutput(fixture).transformed_feature_spec()
            == tft.TFTransformOutput(real).transformed_feature_spec())

    def layout(root):  # top-level entries and the kinds of file under them, shard numbers left out
        return {(os.path.relpath(path, root).split(os.sep)[0], name.split("-")[0])
                for path, _, names in os.walk(root) for name in names}

    assert layout(fixture) <= layout(real)
    for split in ("train", "eval"):
        assert len(read_split(fixture, split, genres, INPUT_SIZE)) > 0
