"""Beam `ModelHandler` for the exported poster model: encoded poster bytes → L2-normalised embeddings.

RunInference loads the model once per worker process (shared across its threads) and feeds it batches from
`BatchElements` sized by `embed.min_batch_size`/`max_batch_size`. With `pixel_size` (an export with the pixel
signature), the handler decodes each batch once, in one call, with the one pixel function
(`pipelines.common.pixels.poster_pixels`: a JPEG at the smallest DCT scale that covers the input) in the worker
process, and feeds the uint8 pixels to the model's pixel signature; that decode is the posters' validation too
(the validator passed them with `decode=False`): when the batch does not decode, its posters are decoded one at a
time and those that fail come back as an `InferenceFailure` carrying the validator's own reject
(`posters.decode_rejection`: truncated, undecodable). Without `pixel_size` the model's own graph decodes the bytes.
When a batch runs out of accelerator memory the handler halves it,
retries, and keeps the size that worked for every later batch of that process. When the model fails on a batch
for any other reason, the batch is run again one poster at a time: the posters the model fails on alone come back
as an `InferenceFailure` (the error, as a `PredictionResult`'s inference), their batch-mates as vectors.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import tensorflow as tf
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipelines.common.exported_model import load_exported_model
from pipelines.common.pixels import PixelDecoder
from pipelines.common.posters import decode_rejection, describe_error

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "embed"
_ESCAPED_BYTES = re.compile(r"(\\x[0-9a-fA-F]{2})+")


@dataclass(frozen=True)
class InferenceFailure:
    """The inference of a poster the model failed on by itself (`error` is `Type: message`, one line), or with a
    `reason`, of one the decode refused: `reason` and `error` are the validator's reject reason and detail."""

    error: str
    reason: Optional[str] = None


def _error_text(err: Exception) -> str:
    """`Type: first line of the message`, bytes literals and escaped bytes redacted (TensorFlow's messages may
    quote the input tensor: rejects never copy poster bytes)."""
    return _ESCAPED_BYTES.sub("<bytes>", describe_error(err))


class PosterEmbedder:
    """A loaded model plus the largest batch found to fit (None: no limit found yet).

    Callers use its methods only, so it also works behind Beam's cross-process proxy (shared model).
    """

    def __init__(self, embed: Callable[[Sequence[bytes]], np.ndarray], meta: dict):
        self.embed = embed
        self.meta = meta
        self.batch_limit: Optional[int] = None
        self._lock = threading.Lock()

    def model_version(self) -> str:
        return self.meta["model_version"]

    def embed_batch(self, images: Sequence[bytes]) -> np.ndarray:
        """Embeds `images` in chunks no larger than the batch limit; on out-of-memory, halves and retries.

        Returns float32 [len(images), dim] in input order. A single image that still runs out of memory raises.
        """
        images = list(images)
        size = min(len(images), self.batch_limit or len(images))
        parts, start = [], 0
        while start < len(images):
            chunk = images[start:start + size]
            try:
                parts.append(np.asarray(self.embed(chunk), dtype=np.float32))
            except tf.errors.ResourceExhaustedError:
                if size == 1:
                    raise
                size = self._limit_batches_to(size // 2, failed_size=size)
                continue
            start += len(chunk)
        return np.concatenate(parts) if parts else np.zeros((0, self.meta["dim"]), np.float32)

    def _limit_batches_to(self, size: int, failed_size: int) -> int:
        with self._lock:
            if self.batch_limit is None or size < self.batch_limit:
                self.batch_limit = size
                log.warning("embed: out of memory at a batch of %d; batches limited to %d from now on",
                            failed_size, size)
            return self.batch_limit


class PosterModelHandler(ModelHandler[bytes, PredictionResult, PosterEmbedder]):
    """RunInference handler: examples are encoded poster bytes, inferences float32 [dim] unit vectors."""

    def __init__(self, model_uri: str, min_batch_size: int, max_batch_size: int,
                 share_across_processes: bool = False, pixel_size: Optional[int] = None):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         large_model=share_across_processes)
        self.model_uri = model_uri
        self.pixel_size = pixel_size
        # In each worker process, not in the shared model's: decoding is the workers' CPU work.
        self._decoder = PixelDecoder(pixel_size) if pixel_size else None

    @classmethod
    def from_config(cls, model_uri: str, embed_config, pixel_size: Optional[int] = None) -> PosterModelHandler:
        return cls(model_uri, embed_config.min_batch_size, embed_config.max_batch_size,
                   embed_config.share_model_across_processes, pixel_size)

    def load_model(self) -> PosterEmbedder:
        return PosterEmbedder(*load_exported_model(self.model_uri, pixels=self._decoder is not None))

    def run_inference(self, batch: Sequence[bytes], model: PosterEmbedder,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        """Vectors for `batch` (decoded first, with `pixel_size`); a poster that does not decode gets an
        `InferenceFailure` with its reject reason, and when the model fails on the batch, each poster is run alone
        and those it fails on get an `InferenceFailure`: one bad poster never costs its batch-mates."""
        version = model.model_version()
        inputs, refused = self._decode(batch) if self._decoder is not None else (batch, {})
        try:
            vectors = list(model.embed_batch(inputs)) if len(inputs) else []
        except Exception as err:  # noqa: BLE001 — the batch is retried poster by poster below
            if len(inputs) == 1:
                vectors = [InferenceFailure(_error_text(err))]
            else:
                log.warning("embed: the model failed on a batch of %d (%s); retrying its posters one by one",
                            len(inputs), _error_text(err))
                Metrics.counter(METRICS_NAMESPACE, "batches_retried_one_by_one").inc()
                vectors = [self._embed_one(image, model) for image in inputs]
        if len(vectors) != len(inputs):
            raise RuntimeError(f"embed: {len(vectors)} results for {len(inputs)} posters")
        embedded = iter(vectors)
        return [PredictionResult(image, refused[i] if i in refused else next(embedded), version)
                for i, image in enumerate(batch)]

    def _decode(self, batch: Sequence[bytes]) -> tuple[np.ndarray, dict[int, InferenceFailure]]:
        """(uint8 pixels of the posters that decode, in order; {index in batch: the reject of one that does not})."""
        try:
            return self._decoder.decode_batch(batch), {}
        except tf.errors.OpError:  # find the posters that fail, one at a time
            pass
        pixels, refused = [], {}
        for index, image in enumerate(batch):
            try:
                pixels.append(self._decoder.decode(image))
            except tf.errors.OpError as err:
                rejected = decode_rejection(image, err)
                refused[index] = InferenceFailure(rejected.detail, rejected.reason)
        size = self._decoder.size
        return (np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)), refused

    @staticmethod
    def _embed_one(image, model: PosterEmbedder):
        try:
            return model.embed_batch([image])[0]
        except Exception as err:  # noqa: BLE001 — this poster alone is rejected
            Metrics.counter(METRICS_NAMESPACE, "posters_inference_failed").inc()
            return InferenceFailure(_error_text(err))

    def get_num_bytes(self, batch: Sequence[bytes]) -> int:
        return sum(len(image) for image in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def __repr__(self) -> str:
        inputs = f"decoded to {self.pixel_size}px pixels" if self.pixel_size else "bytes"
        return f"PosterModelHandler({self.model_uri!r}, {inputs}, batch {self.batch_elements_kwargs()})"
