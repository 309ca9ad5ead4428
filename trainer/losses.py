"""Semi-hard triplet loss (FaceNet, Schroff et al. 2015), held to tensorflow-addons' semantics.

tensorflow-addons does not import next to Keras 3, so this is a port of
`tensorflow_addons/losses/triplet.py` (`triplet_semihard_loss`, `_masked_maximum`, `_masked_minimum`) and
`tensorflow_addons/losses/metric_learning.py` (`pairwise_distance`, `angular_distance`) at their last
release (0.23), step for step, so that values and gradients match `tfa.losses.TripletSemiHardLoss`.
`tests/trainer/test_losses.py` holds the port to tfa's own test cases.

Two departures, both invisible in tfa's domain:

- masks are cast to the distance matrix's dtype instead of float32, so float64 works (tfa raised on it);
- an optional `positive_mask` replaces label equality, so posters that share any genre can be positives
  (`shared_genre_mask`). With one genre per poster this is exactly tfa's loss.

The functional core makes no assumption about batch composition: the trainer may call it on embeddings and
labels all-gathered across replicas. Memory is O(B^3) in the batch size B, as in tfa (the semi-hard search
tiles the [B, B] distance matrix B times): 256 → ~70 MB of float32, 1024 → ~4.3 GB.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Union

import keras
import tensorflow as tf

DISTANCE_METRICS = ("L2", "squared-L2", "angular")
POSITIVES = ("labels", "shared_genre")
_AVERAGING_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")

DistanceMetric = Union[str, Callable[[tf.Tensor], tf.Tensor]]


def pairwise_distance(feature, squared: bool = False) -> tf.Tensor:
    """Euclidean (or squared Euclidean) distances between the rows of `feature` [N, D] → [N, N].

    Computed as |a|^2 + |b|^2 - 2ab, clipped at zero, with an exact-zero diagonal (tfa's numerics).
    """
    dtype = feature.dtype
    distances_squared = tf.math.add(
        tf.math.reduce_sum(tf.math.square(feature), axis=[1], keepdims=True),
        tf.math.reduce_sum(tf.math.square(tf.transpose(feature)), axis=[0], keepdims=True),
    ) - 2.0 * tf.matmul(feature, tf.transpose(feature))
    # Round-off can make the expansion slightly negative.
    distances_squared = tf.math.maximum(distances_squared, 0.0)
    error_mask = tf.math.less_equal(distances_squared, 0.0)

    if squared:
        distances = distances_squared
    else:
        # The 1e-16 keeps sqrt's gradient finite at zero; it is multiplied away just below.
        distances = tf.math.sqrt(distances_squared + tf.cast(error_mask, dtype) * 1e-16)
    distances = tf.math.multiply(distances, tf.cast(tf.math.logical_not(error_mask), dtype))

    num_data = tf.shape(feature)[0]
    mask_offdiagonals = tf.ones_like(distances) - tf.linalg.diag(tf.ones([num_data], dtype))
    return tf.math.multiply(distances, mask_offdiagonals)


def angular_distance(feature) -> tf.Tensor:
    """1 - cosine similarity between the rows of `feature` [N, D] → [N, N] (rows are L2-normalised first).

    This is tfa's "angular" distance: it is not the angle itself, and it lies in [0, 2].
    """
    feature = tf.math.l2_normalize(feature, axis=1)
    distances = 1 - tf.matmul(feature, feature, transpose_b=True)
    return tf.maximum(distances, 0.0)


def _masked_maximum(data, mask, dim=1):
    """Maximum of `data` [n, m] over the entries where `mask` (float 0/1) is 1, along `dim` (kept, size 1).

    Where the mask selects nothing, the result is the plain minimum along `dim` (tfa's behaviour).
    """
    axis_minimums = tf.math.reduce_min(data, dim, keepdims=True)
    return tf.math.reduce_max(tf.math.multiply(data - axis_minimums, mask), dim, keepdims=True) + axis_minimums


def _masked_minimum(data, mask, dim=1):
    """Minimum of `data` [n, m] over the entries where `mask` (float 0/1) is 1, along `dim` (kept, size 1).

    Where the mask selects nothing, the result is the plain maximum along `dim` (tfa's behaviour).
    """
    axis_maximums = tf.math.reduce_max(data, dim, keepdims=True)
    return tf.math.reduce_min(tf.math.multiply(data - axis_maximums, mask), dim, keepdims=True) + axis_maximums


def shared_genre_mask(multi_hot) -> tf.Tensor:
    """[B, G] multi-hot genre matrix (bool, int or float) → [B, B] bool: True where two posters share a genre."""
    multi_hot = tf.cast(tf.convert_to_tensor(multi_hot), tf.float32)
    return tf.math.greater(tf.matmul(multi_hot, multi_hot, transpose_b=True), 0.0)


def check_distance_metric(distance_metric: DistanceMetric) -> None:
    """Raise ValueError unless `distance_metric` is one of DISTANCE_METRICS or a callable."""
    if callable(distance_metric):
        return
    if distance_metric not in DISTANCE_METRICS:
        raise ValueError(
            f"distance_metric={distance_metric!r} is not supported: use one of {', '.join(DISTANCE_METRICS)} "
            "or a callable mapping embeddings [B, D] to a distance matrix [B, B]."
        )


def distance_matrix(embeddings, distance_metric: DistanceMetric = "L2") -> tf.Tensor:
    """Pairwise distances [B, B] of `embeddings` [B, D] under one of DISTANCE_METRICS or a callable."""
    check_distance_metric(distance_metric)
    if distance_metric == "L2":
        return pairwise_distance(embeddings, squared=False)
    if distance_metric == "squared-L2":
        return pairwise_distance(embeddings, squared=True)
    if distance_metric == "angular":
        return angular_distance(embeddings)
    return distance_metric(embeddings)


def _semihard_negatives(pdist_matrix, adjacency_not, batch_size):
    """For every (anchor a, positive p): the closest negative farther than d(a, p), else a's farthest negative.

    Vectorised as in tfa: row a*B + p of the tiled matrix holds anchor a's distances, masked to the negatives
    farther than d(a, p).
    """
    dtype = pdist_matrix.dtype
    pdist_matrix_tile = tf.tile(pdist_matrix, [batch_size, 1])
    mask = tf.math.logical_and(
        tf.tile(adjacency_not, [batch_size, 1]),
        tf.math.greater(pdist_matrix_tile, tf.reshape(tf.transpose(pdist_matrix), [-1, 1])),
    )
    mask_final = tf.reshape(
        tf.math.greater(tf.math.reduce_sum(tf.cast(mask, dtype), 1, keepdims=True), 0.0),
        [batch_size, batch_size],
    )
    mask_final = tf.transpose(mask_final)

    # negatives_outside: smallest D_an where D_an > D_ap.
    negatives_outside = tf.reshape(
        _masked_minimum(pdist_matrix_tile, tf.cast(mask, dtype)), [batch_size, batch_size]
    )
    negatives_outside = tf.transpose(negatives_outside)
    # negatives_inside: largest D_an.
    negatives_inside = tf.tile(_masked_maximum(pdist_matrix, tf.cast(adjacency_not, dtype)), [1, batch_size])
    return tf.where(mask_final, negatives_outside, negatives_inside)


def triplet_semihard_loss(
    labels,
    embeddings,
    margin: float = 1.0,
    distance_metric: DistanceMetric = "L2",
    positive_mask=None,
) -> tf.Tensor:
    """Triplet loss with semi-hard negative mining over one batch; tfa's `triplet_semihard_loss`.

    Args:
      labels: integer class ids, [B] or [B, 1]. Ignored (may be None) when `positive_mask` is given.
      embeddings: float [B, D]. float16/bfloat16 are computed in float32 and the result cast back.
      margin: the margin added to d(a, p) - d(a, n).
      distance_metric: "L2", "squared-L2", "angular" (1 - cosine similarity) or a callable [B, D] → [B, B].
      positive_mask: optional bool [B, B]; True marks (anchor, positive) pairs and replaces label equality
        (e.g. `shared_genre_mask`). The diagonal is ignored; everything else off-diagonal is a negative.

    Returns:
      A scalar with the dtype of `embeddings`: the mean over all ordered positive pairs (a, p), a != p, of
      max(0, margin + d(a, p) - d(a, n)), n being the semi-hard negative. As in tfa, a batch with no
      positive pair gives NaN (0 / 0), and an anchor with no negative uses the smallest distance in its row.
    """
    embeddings = tf.convert_to_tensor(embeddings, name="embeddings")
    convert_to_float32 = embeddings.dtype in (tf.float16, tf.bfloat16)
    precise_embeddings = tf.cast(embeddings, tf.float32) if convert_to_float32 else embeddings
    batch_size = tf.shape(precise_embeddings)[0]

    pdist_matrix = distance_matrix(precise_embeddings, distance_metric)
    dtype = pdist_matrix.dtype
    diagonal = tf.eye(batch_size, dtype=tf.bool)
    if positive_mask is None:
        labels = tf.convert_to_tensor(labels, name="labels")
        labels = tf.reshape(labels, [tf.shape(labels)[0], 1])
        adjacency = tf.math.equal(labels, tf.transpose(labels))
    else:
        adjacency = tf.math.logical_or(tf.cast(positive_mask, tf.bool), diagonal)
    adjacency_not = tf.math.logical_not(adjacency)

    semi_hard_negatives = _semihard_negatives(pdist_matrix, adjacency_not, batch_size)
    loss_mat = tf.math.add(tf.cast(margin, dtype), pdist_matrix - semi_hard_negatives)
    mask_positives = tf.cast(adjacency, dtype) - tf.cast(diagonal, dtype)

    # Every ordered positive pair except (a, a) counts (lifted-struct would halve the upper triangle).
    num_positives = tf.math.reduce_sum(mask_positives)
    triplet_loss = tf.math.truediv(
        tf.math.reduce_sum(tf.math.maximum(tf.math.multiply(loss_mat, mask_positives), 0.0)),
        num_positives,
    )
    return tf.cast(triplet_loss, embeddings.dtype) if convert_to_float32 else triplet_loss


@keras.saving.register_keras_serializable(package="posters")
class TripletSemiHardLoss(keras.losses.Loss):
    """Keras loss for semi-hard triplet mining; same constructor, call and values as tfa's class.

    `loss(labels, embeddings)` returns tfa's scalar for the whole batch (Keras' reduction leaves a scalar as
    is). Under a tf.distribute strategy with R replicas it is divided by R, as Keras does for its own losses,
    so that `fit` averages the replicas' gradients instead of summing them.

    Args:
      margin: margin term of the loss (the seed uses 0.1 with "angular").
      distance_metric: "L2", "squared-L2", "angular" (1 - cosine similarity), or a callable [B, D] → [B, B]
        (register it with `keras.saving.register_keras_serializable` to save the loss).
      name: optional name of the loss.
      positives: "labels" (tfa: `labels` are int class ids [B] or [B, 1], positives share the id) or
        "shared_genre" (`labels` are a multi-hot genre matrix [B, G], positives share at least one genre).
      **kwargs: passed to `keras.losses.Loss` (`reduction`, `dtype`).
    """

    def __init__(self, margin=1.0, distance_metric: DistanceMetric = "L2", name=None, *, positives="labels",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        check_distance_metric(distance_metric)
        if positives not in POSITIVES:
            raise ValueError(f"positives={positives!r} is not supported: use one of {', '.join(POSITIVES)}.")
        self.margin = float(margin)
        self.distance_metric = distance_metric
        self.positives = positives
        self._dtype_arg = kwargs.get("dtype")

    def __call__(self, y_true, y_pred, sample_weight=None):
        loss = super().__call__(y_true, y_pred, sample_weight)
        # Under tf.distribute Keras divides every non-scalar loss by the replica count (then sums gradients
        # over replicas) but leaves a scalar untouched, which would make `fit` R times too steep on R replicas.
        # Scale this batch-level scalar the same way; with one replica nothing changes.
        if sample_weight is None and self.reduction in _AVERAGING_REDUCTIONS:
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:
                loss = loss / tf.cast(replicas, loss.dtype)
        return loss

    def call(self, y_true, y_pred):
        if self.positives == "shared_genre":
            return triplet_semihard_loss(
                None, y_pred, self.margin, self.distance_metric, positive_mask=shared_genre_mask(y_true)
            )
        return triplet_semihard_loss(y_true, y_pred, self.margin, self.distance_metric)

    def get_config(self):
        config = super().get_config()
        metric = self.distance_metric
        if callable(metric):
            metric = keras.saving.serialize_keras_object(metric)
        config.update(margin=self.margin, distance_metric=metric, positives=self.positives)
        if self._dtype_arg is not None:
            config["dtype"] = keras.saving.serialize_keras_object(self._dtype_arg)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("distance_metric"), dict):
            config["distance_metric"] = keras.saving.deserialize_keras_object(config["distance_metric"])
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
