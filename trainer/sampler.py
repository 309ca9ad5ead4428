"""P×K batches for metric learning: P distinct classes (primary genres), K posters of each.

Semi-hard triplet mining needs every anchor to have a positive and a negative in the same batch; random
batches over skewed genre counts often give neither for rare genres. A P×K batch guarantees both, and samples
classes uniformly, so rare genres are seen as often as common ones.

A batch is a flat int64 array of P*K example indices, class-major: the K indices of the first class, then the
K of the second, and so on. Classes are drawn without replacement within a batch; a class with at least K
examples gives K distinct ones, a smaller class is sampled with replacement. Batch `b` of epoch `e` depends
only on (seed, e, b), so a run is reproducible.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _check_class_ids(class_ids) -> np.ndarray:
    class_ids = np.asarray(class_ids)
    if class_ids.ndim != 1 or class_ids.size == 0:
        raise ValueError(f"class_ids must be a non-empty 1-D array of class ids, got shape {class_ids.shape}.")
    if not np.issubdtype(class_ids.dtype, np.integer):
        raise ValueError(f"class_ids must be integers (e.g. primary genre indices), got dtype {class_ids.dtype}.")
    return class_ids


def check_pk(num_classes: int, classes_per_batch: int, examples_per_class: int) -> None:
    if num_classes < 2:
        raise ValueError(
            f"P×K sampling needs at least 2 classes so that every anchor has a negative; class_ids has "
            f"{num_classes}. Use more genres (or a finer class id) for metric learning."
        )
    if classes_per_batch < 2:
        raise ValueError(
            f"classes_per_batch (P) must be at least 2 so batches hold negatives, got {classes_per_batch}."
        )
    if classes_per_batch > num_classes:
        raise ValueError(
            f"classes_per_batch (P) = {classes_per_batch} exceeds the {num_classes} classes in class_ids: "
            f"lower P to at most {num_classes}."
        )
    if examples_per_class < 2:
        raise ValueError(
            f"examples_per_class (K) must be at least 2 so every anchor has a positive, got {examples_per_class}."
        )


def batches_per_epoch(num_examples: int, classes_per_batch: int, examples_per_class: int) -> int:
    """About one pass over the examples: N // (P*K) batches, at least 1."""
    return max(1, num_examples // (classes_per_batch * examples_per_class))


def pk_batches(
    class_ids,
    classes_per_batch: int,
    examples_per_class: int,
    seed: int = 0,
    epoch: int = 0,
    num_batches: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield `num_batches` (default: `batches_per_epoch`) P×K batches of example indices for one epoch.

    Args:
      class_ids: int array [N], the class (primary genre index) of each example.
      classes_per_batch: P, distinct classes per batch (2 <= P <= number of classes).
      examples_per_class: K, examples per class in a batch (>= 2).
      seed, epoch: together they fix the batches; use a new `epoch` for each pass.

    Yields:
      int64 arrays [P*K], class-major.
    """
    class_ids = _check_class_ids(class_ids)
    classes, inverse = np.unique(class_ids, return_inverse=True)
    check_pk(len(classes), classes_per_batch, examples_per_class)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    if num_batches is None:
        num_batches = batches_per_epoch(len(class_ids), classes_per_batch, examples_per_class)

    rng = np.random.default_rng([seed, epoch])
    for _ in range(num_batches):
        chosen = rng.choice(len(classes), size=classes_per_batch, replace=False)
        yield np.concatenate([
            rng.choice(members[c], size=examples_per_class, replace=len(members[c]) < examples_per_class)
            for c in chosen
        ]).astype(np.int64)

