"""The RunInference model handler: the exported model's vectors, batch sizes from config, out-of-memory backoff."""
import io
import logging
import re

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipelines.common.exported_model import load_exported_model
from pipelines.config import EmbedConfig
from pipelines.embed.model_handler import PosterEmbedder, PosterModelHandler
from tests.pipelines.embed.tiny_model import call_exported_model, export_tiny_model

FITS = 3  # the "accelerator" below runs out of memory on batches larger than this


def poster_jpegs(n):
    images = []
    for i in range(n):
        buffer = io.BytesIO()
        pixels = np.random.default_rng(i).integers(0, 256, (48, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, "JPEG")
        images.append(buffer.getvalue())
    return images


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model"))
    export_tiny_model(path, input_size=32, dim=16, seed=0)
    return path


class SmallMemoryModel:
    """The real exported model behind a memory limit: batches above `fits` raise ResourceExhaustedError."""

    def __init__(self, model_dir, fits=FITS):
        self.serve, self.meta = load_exported_model(model_dir)
        self.fits = fits
        self.calls = []

    def __call__(self, images):
        self.calls.append(len(images))
        if len(images) > self.fits:
            raise tf.errors.ResourceExhaustedError(None, None, f"OOM when allocating a batch of {len(images)}")
        return self.serve(images)


class SmallMemoryHandler(PosterModelHandler):
    def load_model(self):
        model = SmallMemoryModel(self.model_uri)
        return PosterEmbedder(model, model.meta)


def test_handler_vectors_equal_the_exported_model_called_directly(model_dir):
    images = poster_jpegs(5)
    handler = PosterModelHandler(model_dir, min_batch_size=2, max_batch_size=4)
    results = list(handler.run_inference(images, handler.load_model()))
    vectors = np.stack([r.inference for r in results])
    assert [r.example for r in results] == images
    np.testing.assert_allclose(vectors, call_exported_model(model_dir, images), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batch_sizes_come_from_the_embed_config(model_dir):
    handler = PosterModelHandler.from_config(model_dir, EmbedConfig(min_batch_size=3, max_batch_size=17))
    assert handler.batch_elements_kwargs() == {"min_batch_size": 3, "max_batch_size": 17}
    assert not handler.share_model_across_processes()
    shared = PosterModelHandler.from_config(model_dir, EmbedConfig(share_model_across_processes=True))
    assert shared.share_model_across_processes()


def test_out_of_memory_halves_the_batch_and_remembers_the_size_that_worked(model_dir, caplog):
    images = poster_jpegs(10)
    handler = SmallMemoryHandler(model_dir, min_batch_size=1, max_batch_size=10)
    embedder = handler.load_model()
    with caplog.at_level(logging.WARNING, logger="pipelines.embed.model_handler"):
        vectors = embedder.embed_batch(images)
    np.testing.assert_allclose(vectors, call_exported_model(model_dir, images), atol=1e-6)
    assert embedder.embed.calls == [10, 5, 2, 2, 2, 2, 2]
    assert embedder.batch_limit == 2
    assert "out of memory at a batch of 10" in caplog.text and "limited to 2" in caplog.text

    embedder.embed.calls.clear()
    embedder.embed_batch(images[:6])
    assert embedder.embed.calls == [2, 2, 2]  # no failed attempt once the size is known


def test_out_of_memory_on_a_single_poster_is_raised(model_dir):
    model = SmallMemoryModel(model_dir, fits=0)
    embedder = PosterEmbedder(model, model.meta)
    with pytest.raises(tf.errors.ResourceExhaustedError):
        embedder.embed_batch(poster_jpegs(2))
    assert embedder.batch_limit == 1


def test_run_inference_with_out_of_memory_model_embeds_every_poster(model_dir, caplog):
    """In a pipeline, batches of up to 8 hit the memory limit; every poster still comes out, none fails. The
    handler's backoff warning shows a batch larger than the model fits did reach it and was split."""
    images = poster_jpegs(12)
    expected = call_exported_model(model_dir, images)
    handler = KeyedModelHandler(SmallMemoryHandler(model_dir, min_batch_size=8, max_batch_size=8))
    with caplog.at_level(logging.WARNING, logger="pipelines.embed.model_handler"), BeamTestPipeline() as p:
        results, failures = (p
                             | beam.Create(list(enumerate(images)))
                             | RunInference(handler).with_exception_handling())
        close = results | beam.MapTuple(lambda i, result: bool(np.allclose(result.inference, expected[i], atol=1e-6)))
        assert_that(close, equal_to([True] * len(images)), label="AllEmbedded")
        assert_that(failures.failed_inferences, equal_to([]), label="NoFailures")
    too_large = [int(size) for size in re.findall(r"out of memory at a batch of (\d+)", caplog.text)]
    assert too_large and all(size > FITS for size in too_large), caplog.text


def test_model_shared_across_processes_gives_the_same_vectors(model_dir):
    """`embed.share_model_across_processes`: the model lives in one server process behind Beam's proxy."""
    images = poster_jpegs(6)
    expected = call_exported_model(model_dir, images)
    handler = KeyedModelHandler(PosterModelHandler(model_dir, min_batch_size=2, max_batch_size=4,
                                                   share_across_processes=True))
    with BeamTestPipeline() as p:
        results = p | beam.Create(list(enumerate(images))) | RunInference(handler)
        close = results | beam.MapTuple(lambda i, result: bool(np.allclose(result.inference, expected[i], atol=1e-6)))
        assert_that(close, equal_to([True] * len(images)))


def test_with_a_pixel_size_the_handler_decodes_once_and_gives_the_exported_models_vectors(model_dir):
    """The batch decoded in one call (the posters' only decode) and run through the pixel signature: the vectors
    of the serving signature on the bytes."""
    images = poster_jpegs(5)
    handler = PosterModelHandler(model_dir, min_batch_size=2, max_batch_size=4, pixel_size=32)
    results = list(handler.run_inference(images, handler.load_model()))
    assert [r.example for r in results] == images
    np.testing.assert_allclose(np.stack([r.inference for r in results]), call_exported_model(model_dir, images),
                               atol=1e-6)


def test_a_poster_that_does_not_decode_gets_the_validators_reject_and_costs_no_batch_mate(model_dir):
    """Passed by `validate_poster(decode=False)`, refused by the handler's decode: the reject (reason and detail)
    that `validate_poster` with its decode gives the same file."""
    from pipelines.common.posters import PosterRejected, validate_poster
    from pipelines.config import ImageConfig
    from pipelines.contracts import RejectReason
    from pipelines.embed.model_handler import InferenceFailure

    config = ImageConfig(min_side=16, max_pixels=1_000_000, max_bytes=1_000_000)
    good = poster_jpegs(3)
    truncated = good[1][:len(good[1]) // 2]
    validate_poster(truncated, config, decode=False)  # the header is intact: only a decode tells
    with pytest.raises(PosterRejected) as caught:
        validate_poster(truncated, config)
    batch = [good[0], truncated, good[2]]
    handler = PosterModelHandler(model_dir, min_batch_size=2, max_batch_size=4, pixel_size=32)
    results = list(handler.run_inference(batch, handler.load_model()))
    assert results[1].inference == InferenceFailure(caught.value.detail, RejectReason.TRUNCATED_IMAGE)
    assert caught.value.reason == RejectReason.TRUNCATED_IMAGE
    np.testing.assert_allclose(np.stack([results[0].inference, results[2].inference]),
                               call_exported_model(model_dir, [good[0], good[2]]), atol=1e-6)
