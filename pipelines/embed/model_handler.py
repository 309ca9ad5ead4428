"""Beam `ModelHandler` for the exported poster model: encoded poster bytes → L2-normalised embeddings.

RunInference loads the model once per worker process (shared across its threads) and feeds it batches from
`BatchElements` sized by `embed.min_batch_size`/`max_batch_size`. The model's own graph decodes and resizes,
so nothing here knows about pixels. When a batch runs out of accelerator memory the handler halves it,
retries, and keeps the size that worked for every later batch of that process.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipelines.common.exported_model import load_exported_model

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "embed"


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
                 share_across_processes: bool = False):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         large_model=share_across_processes)
        self.model_uri = model_uri

    @classmethod
    def from_config(cls, model_uri: str, embed_config) -> PosterModelHandler:
        return cls(model_uri, embed_config.min_batch_size, embed_config.max_batch_size,
                   embed_config.share_model_across_processes)

    def load_model(self) -> PosterEmbedder:
        return PosterEmbedder(*load_exported_model(self.model_uri))

    def run_inference(self, batch: Sequence[bytes], model: PosterEmbedder,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        vectors, version = model.embed_batch(batch), model.model_version()
        return [PredictionResult(image, vector, version) for image, vector in zip(batch, vectors)]

    def get_num_bytes(self, batch: Sequence[bytes]) -> int:
        return sum(len(image) for image in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def __repr__(self) -> str:
        return f"PosterModelHandler({self.model_uri!r}, batch {self.batch_elements_kwargs()})"
