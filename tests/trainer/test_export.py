"""The export: encoded poster bytes in, the in-memory model's unit vectors out; meta and version beside it."""
import datetime as dt
import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines.common.exported_model import ExportError, load_exported_model
from pipelines.common.pixels import poster_pixels
from pipelines.config import ModelConfig
from trainer.export import export_model, model_version
from trainer.model import build_model, embedding_model

GENRES = ["Action", "Comedy", "Drama"]
SIZE = 32


def _embedder(seed=0):
    keras.utils.set_random_seed(seed)
    config = ModelConfig(backbone="tiny_cnn", weights="none", input_size=SIZE, embedding_dim=128)
    return embedding_model(build_model(config, num_genres=len(GENRES)))


def _poster(seed: int, fmt: str, size=(45, 60)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    embedder = _embedder()
    out = str(tmp_path_factory.mktemp("export") / "model")
    meta = export_model(embedder, out, "tiny_cnn", SIZE, GENRES, extra_meta={"trained_on": "fixture"})
    return embedder, out, meta


def test_bytes_in_unit_vectors_out_same_as_the_in_memory_model(exported):
    embedder, out, _ = exported
    posters = [_poster(0, "PNG"), _poster(1, "JPEG"), _poster(2, "PNG", size=(200, 300))]
    embed, meta = load_exported_model(out)
    vectors = embed(posters)
    assert vectors.shape == (3, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The reference: the training-time transformation, then the Keras model.
    pixels = np.stack([poster_pixels(tf.constant(poster), SIZE).numpy() for poster in posters])
    np.testing.assert_allclose(vectors, embedder(pixels, training=False), atol=1e-5)


def test_empty_batch_gives_no_vectors(exported):
    embed, _ = load_exported_model(exported[1])
    assert embed([]).shape == (0, 128)


def test_meta_describes_the_model(exported):
    embedder, out, meta = exported
    assert {k: meta[k] for k in ("backbone", "input_size", "dim", "metric", "genres", "trained_on")} == {
        "backbone": "tiny_cnn", "input_size": SIZE, "dim": 128, "metric": "angular", "genres": GENRES,
        "trained_on": "fixture"}
    assert meta["model_version"] == model_version(embedder, "tiny_cnn", SIZE)
    assert dt.datetime.fromisoformat(meta["created"]).tzinfo is not None
    assert load_exported_model(out)[1] == meta
    assert os.path.exists(os.path.join(out, "_SUCCESS"))


def test_model_version_is_a_content_hash():
    same_a, same_b, other = _embedder(seed=0), _embedder(seed=0), _embedder(seed=1)
    assert model_version(same_a, "tiny_cnn", SIZE) == model_version(same_b, "tiny_cnn", SIZE)
    assert model_version(same_a, "tiny_cnn", SIZE) != model_version(other, "tiny_cnn", SIZE)
    assert model_version(same_a, "tiny_cnn", SIZE) != model_version(same_a, "tiny_cnn", 2 * SIZE)
    kernel = same_b.get_layer("embedding").kernel
    kernel.assign(kernel.numpy() + 1e-3)
    assert model_version(same_a, "tiny_cnn", SIZE) != model_version(same_b, "tiny_cnn", SIZE)


def test_a_new_export_replaces_the_old_one_whole(exported, tmp_path):
    embedder, _, _ = exported
    out = str(tmp_path / "model")
    os.makedirs(out)
    open(os.path.join(out, "stale.txt"), "w").close()
    export_model(embedder, out, "tiny_cnn", SIZE, GENRES)
    assert not os.path.exists(os.path.join(out, "stale.txt"))
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".staging")]


def test_a_directory_without_an_export_is_refused(tmp_path):
    with pytest.raises(ExportError, match="not a complete model export"):
        load_exported_model(str(tmp_path))


def test_export_to_gcs_and_load_from_it(exported, gcs_emulator):
    embedder, local_out, _ = exported
    uri = gcs_emulator.uri("models/poster")
    meta = export_model(embedder, uri, "tiny_cnn", SIZE, GENRES)
    embed, loaded_meta = load_exported_model(uri)
    assert loaded_meta == meta
    posters = [_poster(3, "JPEG")]
    np.testing.assert_allclose(embed(posters), load_exported_model(local_out)[0](posters), atol=1e-6)


def test_the_pixel_signature_gives_the_serving_signatures_vectors(exported):
    """`embed_pixels` on decoded pixels equals `serving_default` on the encoded bytes (the benchmarks' bare model)."""
    _, out, _ = exported
    from pipelines.contracts import PIXELS_INPUT, PIXELS_SIGNATURE, SERVING_OUTPUT

    posters = [_poster(seed, "PNG") for seed in range(3)]
    pixels = np.stack([poster_pixels(tf.constant(poster), SIZE).numpy() for poster in posters])
    by_pixels = tf.saved_model.load(out).signatures[PIXELS_SIGNATURE](**{PIXELS_INPUT: tf.constant(pixels)})
    np.testing.assert_allclose(by_pixels[SERVING_OUTPUT].numpy(), load_exported_model(out)[0](posters), atol=1e-6)


def test_the_embed_handlers_pixels_through_the_pixel_signature_give_the_serving_vectors(exported, tmp_path):
    """Decode once: the embed model handler's batch decode (`PixelDecoder`, a JPEG at its DCT scale) through the
    loader's pixel path equals the serving signature on the bytes, and its pixels are the training pixels
    (preprocess' PNG of `poster_pixels`, decoded by the trainer)."""
    from pipelines.common.exported_model import takes_pixels
    from pipelines.common.pixels import PixelDecoder
    from pipelines.preprocess.transform import PosterPng
    from trainer.data import decode_pixels

    embedder, out, meta = exported
    posters = [_poster(0, "JPEG", size=(300, 450)), _poster(1, "PNG"), _poster(2, "JPEG", size=(200, 300))]
    served_pixels = PixelDecoder(SIZE).decode_batch(posters)
    training_pixels = np.stack([decode_pixels(PosterPng(SIZE)(poster)).numpy() for poster in posters])
    np.testing.assert_array_equal(served_pixels, training_pixels)
    assert takes_pixels(meta)
    embed_pixels, _ = load_exported_model(out, pixels=True)
    np.testing.assert_allclose(embed_pixels(list(served_pixels)), load_exported_model(out)[0](posters), atol=1e-6)
    np.testing.assert_allclose(embed_pixels(served_pixels), embedder(training_pixels, training=False), atol=1e-5)
    bytes_only = str(tmp_path / "bytes-only")
    assert not takes_pixels(export_model(embedder, bytes_only, "tiny_cnn", SIZE, GENRES, pixel_signature=False))
    with pytest.raises(ExportError, match="no 'embed_pixels' signature"):
        load_exported_model(bytes_only, pixels=True)


def test_export_model_command_writes_an_untrained_export_of_the_config(tmp_path, capsys):
    from trainer.export import main

    out = str(tmp_path / "model")
    assert main(["--config", "configs/local.yaml", "--out", out, "--set", f"model.input_size={SIZE}",
                 "--set", "model.embedding_dim=16", "--genres", "3"]) == 0
    embed, meta = load_exported_model(out)
    assert (meta["trained"], meta["input_size"], meta["dim"], len(meta["genres"])) == (False, SIZE, 16, 3)
    vectors = embed([_poster(0, "JPEG"), _poster(1, "PNG")])
    from pipelines.contracts import PIXELS_SIGNATURE

    assert PIXELS_SIGNATURE in tf.saved_model.load(out).signatures  # the benchmarks' bare model
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert meta["model_version"] in capsys.readouterr().out


def test_export_model_command_refuses_an_unknown_backbone_in_one_line(tmp_path, capsys):
    from trainer.export import main

    with pytest.raises(SystemExit) as exited:
        main(["--out", str(tmp_path / "m"), "--set", "model.backbone=resnet9000"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
