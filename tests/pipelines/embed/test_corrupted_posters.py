"""Property test: a corrupted poster is rejected by the validator with a reason, or the model embeds it — never a
crash, and never a batch-mate lost (random bit flips, truncations and header edits of JPEG, PNG and WebP)."""
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines.common.posters import PosterRejected, validate_poster
from pipelines.config import ImageConfig
from pipelines.contracts import RejectReason
from pipelines.embed.model_handler import InferenceFailure, PosterModelHandler
from tests.pipelines.embed.tiny_model import export_tiny_model

CONFIG = ImageConfig(min_side=32, max_pixels=1_000_000, max_bytes=1_000_000)


def _poster(fmt: str, seed: int) -> bytes:
    """A 48×72 poster with structure and noise, so every part of the file carries pixel data."""
    rng = np.random.default_rng(seed)
    pixels = np.repeat(np.linspace(0, 255, 72, dtype=np.uint8)[:, None, None], 48, axis=1).repeat(3, axis=2)
    pixels = np.clip(pixels.astype(int) + rng.integers(-40, 40, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buffer.getvalue()


ORIGINALS = {fmt: _poster(fmt, seed) for seed, fmt in enumerate(("JPEG", "PNG", "WEBP"))}
BATCH_MATES = [_poster("JPEG", 10), _poster("PNG", 11)]


@st.composite
def corrupted(draw) -> bytes:
    data = bytearray(ORIGINALS[draw(st.sampled_from(sorted(ORIGINALS)))])
    kind = draw(st.sampled_from(["flip", "truncate", "header"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    else:
        at = draw(st.integers(0, min(64, len(data)) - 1))
        edit = draw(st.binary(min_size=1, max_size=4))
        data[at:at + len(edit)] = edit
    return bytes(data)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model"))
    export_tiny_model(path, input_size=32, dim=16, seed=0)
    handler = PosterModelHandler(path, min_batch_size=1, max_batch_size=8)
    return handler, handler.load_model()


def _png_with_bad_crc() -> bytes:
    """What 1 in 50 random bit flips of a PNG does: a wrong IDAT CRC, which PIL ignores and TensorFlow refuses."""
    png = ORIGINALS["PNG"]
    at = png.index(b"IDAT") - 4
    crc_at = at + 8 + int.from_bytes(png[at:at + 4], "big")
    return png[:crc_at] + bytes([png[crc_at] ^ 0x10]) + png[crc_at + 1:]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=corrupted())
@example(data=_png_with_bad_crc())
@example(data=ORIGINALS["PNG"][:ORIGINALS["PNG"].index(b"IEND") - 4])
def test_a_corrupted_poster_is_rejected_or_embedded_and_never_costs_a_batch_mate(embedder, data):
    try:
        poster = validate_poster(data, CONFIG)
    except PosterRejected as rejected:
        assert rejected.reason in RejectReason.ALL and rejected.detail
        return
    handler, model = embedder
    results = list(handler.run_inference([BATCH_MATES[0], poster.image_bytes, BATCH_MATES[1]], model))
    failures = [result.inference for result in results if isinstance(result.inference, InferenceFailure)]
    assert not failures, failures  # what the validator passes, the model decodes: no poster is lost
    vectors = np.stack([result.inference for result in results])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
