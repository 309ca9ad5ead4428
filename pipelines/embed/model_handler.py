"""Beam `ModelHandler` for the exported poster model: poster pixels (or encoded bytes) → L2-normalised embeddings.

RunInference loads the model once per worker process (shared across its threads) and feeds it batches from
`BatchElements` sized by `embed.min_batch_size`/`max_batch_size`. With `pixels`, examples are the uint8
[input_size, input_size, 3] arrays the poster validator decoded (`pipelines.common.pixels.poster_pixels`), fed to the
export's pixel signature; without (an export that has no pixel signature), encoded bytes, which the model's own
graph decodes and resizes. When a batch runs out of accelerator memory the handler halves it,
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
from pipelines.common.posters import describe_error

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "embed"
_ESCAPED_BYTES = re.compile(r"(\\x[0-9a-fA-F]{2})+")


@dataclass(frozen=True)
class InferenceFailure:
    """The inference of a poster the model failed on by itself: `error` is `Type: message`, one line."""

    error: str


def _error_text(err: Exception) -> str:
    """`Type: first line of the message`, bytes literals and escaped bytes redacted (TensorFlow's messages may
    quote the input tensor: rejects never copy poster bytes)."""
    return _ESCAPED_BYTES.sub("<bytes>", describe_error(err))


class PosterEmbedder:
    """A loaded model plus the largest batch found to fit (None: no limit found yet).

    Callers use its methods only, so it also works behind Beam's cross-process proxy (shared model).
    """

    def __init__(self, embed: Callable[[Sequence], np.ndarray], meta: dict):
        self.embed = embed
        self.meta = meta
        self.batch_limit: Optional[int] = None
        self._lock = threading.Lock()

    def model_version(self) -> str:
        return self.meta["model_version"]

    def embed_batch(self, images: Sequence) -> np.ndarray:
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


class PosterModelHandler(ModelHandler[Any, PredictionResult, PosterEmbedder]):
    """RunInference handler: examples are poster pixels (uint8 arrays, with `pixels`) or encoded poster bytes,
    inferences float32 [dim] unit vectors."""

    def __init__(self, model_uri: str, min_batch_size: int, max_batch_size: int,
                 share_across_processes: bool = False, pixels: bool = False):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         large_model=share_across_processes)
        self.model_uri = model_uri
        self.pixels = pixels

    @classmethod
    def from_config(cls, model_uri: str, embed_config, pixels: bool = False) -> PosterModelHandler:
        return cls(model_uri, embed_config.min_batch_size, embed_config.max_batch_size,
                   embed_config.share_model_across_processes, pixels)

    def load_model(self) -> PosterEmbedder:
        return PosterEmbedder(*load_exported_model(self.model_uri, pixels=self.pixels))

    def run_inference(self, batch: Sequence, model: PosterEmbedder,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        """Vectors for `batch`; when the model fails on the batch, each poster is run alone and those it fails on
        get an `InferenceFailure` instead of a vector, so one bad poster never costs its batch-mates."""
        version = model.model_version()
        try:
            vectors = list(model.embed_batch(batch))
        except Exception as err:  # noqa: BLE001 — the batch is retried poster by poster below
            if len(batch) == 1:
                return [PredictionResult(batch[0], InferenceFailure(_error_text(err)), version)]
            log.warning("embed: the model failed on a batch of %d (%s); retrying its posters one by one",
                        len(batch), _error_text(err))
            Metrics.counter(METRICS_NAMESPACE, "batches_retried_one_by_one").inc()
            vectors = [self._embed_one(image, model) for image in batch]
        return [PredictionResult(image, vector, version) for image, vector in zip(batch, vectors)]

    @staticmethod
    def _embed_one(image, model: PosterEmbedder):
        try:
            return model.embed_batch([image])[0]
        except Exception as err:  # noqa: BLE001 — this poster alone is rejected
            Metrics.counter(METRICS_NAMESPACE, "posters_inference_failed").inc()
            return InferenceFailure(_error_text(err))

    def get_num_bytes(self, batch: Sequence) -> int:
        return sum(image.nbytes if isinstance(image, np.ndarray) else len(image) for image in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def __repr__(self) -> str:
        inputs = "pixels" if self.pixels else "bytes"
        return f"PosterModelHandler({self.model_uri!r}, {inputs}, batch {self.batch_elements_kwargs()})"
