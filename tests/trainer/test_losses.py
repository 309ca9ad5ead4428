"""The semi-hard triplet loss, held to tensorflow-addons' semantics.

The numpy references and most parametrisations are ported from tensorflow-addons 0.23:
`tensorflow_addons/losses/tests/triplet_test.py` (`pairwise_distance_np`, `angular_distance_np`,
`triplet_semihard_loss_np`, `test_semihard_tripled_loss_angular`, `test_keras_model_compile_semihard`,
`test_serialization_semihard`), `tensorflow_addons/losses/tests/metric_test.py` (pairwise distances), the
usage examples in the docstring of `tensorflow_addons/losses/triplet.py`, and the tolerances of
`tensorflow_addons/utils/test_utils.py:assert_allclose_according_to_type`.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import losses
from trainer.losses import TripletSemiHardLoss, shared_genre_mask, triplet_semihard_loss

# tfa's tolerances by dtype (test_utils.assert_allclose_according_to_type); float64 is ours (tfa had none).
TOLERANCE = {tf.float64: 1e-10, tf.float32: 1e-6, tf.float16: 1e-3, tf.bfloat16: 1e-2}


# --- numpy references, ported from tfa's triplet_test.py ------------------------------------------------


def pairwise_distance_np(feature, squared=False):
    """Pairwise Euclidean distances [N, N] by explicit differences (not tfa's |a|^2 + |b|^2 - 2ab)."""
    triu = np.triu_indices(feature.shape[0], 1)
    upper_tri_pdists = np.linalg.norm(feature[triu[1]] - feature[triu[0]], axis=1)
    if squared:
        upper_tri_pdists **= 2.0
    num_data = feature.shape[0]
    pairwise_distances = np.zeros((num_data, num_data))
    pairwise_distances[np.triu_indices(num_data, 1)] = upper_tri_pdists
    return pairwise_distances + pairwise_distances.T - np.diag(pairwise_distances.diagonal())


def squared_l_2_dists(embs):
    return pairwise_distance_np(embs, True)


def l_2_dists(embs):
    return pairwise_distance_np(embs, False)


def angular_distance_np(feature):
    """1 - cosine similarity of the L2-normalised rows."""
    normed = feature / np.linalg.norm(feature, ord=2, axis=1, keepdims=True)
    return 1 - normed @ normed.T


DIST_FUNCS = {"L2": l_2_dists, "squared-L2": squared_l_2_dists, "angular": angular_distance_np}


def semihard_loss_from_adjacency_np(adjacency, pdist_matrix, margin):
    """tfa's loop reference, given the [N, N] 'same class' matrix (diagonal True) instead of labels."""
    num_data = pdist_matrix.shape[0]
    loss_np = 0.0
    num_positives = 0.0
    for i in range(num_data):
        for j in range(num_data):
            if adjacency[i][j] > 0.0 and i != j:
                num_positives += 1.0
                pos_distance = pdist_matrix[i][j]
                neg_distances = [pdist_matrix[i][k] for k in range(num_data) if adjacency[i][k] == 0]
                # Sort by distance: the first negative farther than the positive, else the farthest one.
                neg_distances.sort()
                chosen_neg_distance = neg_distances[0]
                for m in range(len(neg_distances)):
                    chosen_neg_distance = neg_distances[m]
                    if chosen_neg_distance > pos_distance:
                        break
                loss_np += np.maximum(0.0, margin - chosen_neg_distance + pos_distance)
    return loss_np / num_positives


def triplet_semihard_loss_np(labels, embedding, margin, dist_func):
    """tfa's `triplet_semihard_loss_np`: positives are pairs with equal labels."""
    labels_reshaped = np.reshape(labels.astype(np.float32), (labels.shape[0], 1))
    adjacency = np.equal(labels_reshaped, labels_reshaped.T)
    return semihard_loss_from_adjacency_np(adjacency, dist_func(embedding), margin)


def random_batch(seed, num_data=10, feat_dim=6, num_classes=4):
    """tfa's test inputs: uniform embeddings [10, 6] in float32 and labels from 4 classes."""
    rng = np.random.default_rng(seed)
    embedding = rng.random((num_data, feat_dim)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=num_data)
    return labels, embedding


# --- tfa's triplet_test.py ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float16, tf.bfloat16])
@pytest.mark.parametrize("dist_metric", ["angular", "squared-L2", "L2"])
def test_semihard_triplet_loss_matches_numpy_reference(seed, dtype, dist_metric):
    """tfa's test_semihard_tripled_loss_angular: expected = tfa's numpy loop reference on the float32 data."""
    labels, embedding = random_batch(seed)
    loss_np = triplet_semihard_loss_np(labels, embedding, 1.0, DIST_FUNCS[dist_metric])

    loss = TripletSemiHardLoss(distance_metric=dist_metric)(tf.constant(labels), tf.constant(embedding, dtype))

    np.testing.assert_allclose(loss.numpy(), loss_np, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dist_metric", ["angular", "squared-L2", "L2"])
def test_semihard_triplet_loss_in_float64(dist_metric):
    """Beyond tfa (which raised on float64): expected = tfa's numpy loop reference, in float64 throughout."""
    labels, embedding = random_batch(3)
    embedding = embedding.astype(np.float64)
    loss_np = triplet_semihard_loss_np(labels, embedding, 1.0, DIST_FUNCS[dist_metric])

    core = triplet_semihard_loss(labels, embedding, distance_metric=dist_metric)
    keras_loss = TripletSemiHardLoss(distance_metric=dist_metric, dtype="float64")(labels, embedding)

    assert core.dtype == tf.float64 and keras_loss.dtype == tf.float64
    np.testing.assert_allclose(core.numpy(), loss_np, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(keras_loss.numpy(), loss_np, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32, tf.float64])
def test_functional_core_returns_the_embedding_dtype(dtype):
    """As tfa: half precision is computed in float32 and cast back; expected = the numpy loop reference."""
    labels, embedding = random_batch(4)
    loss = triplet_semihard_loss(labels, tf.constant(embedding, dtype), margin=0.5, distance_metric="angular")
    loss_np = triplet_semihard_loss_np(labels, embedding.astype(np.float64), 0.5, angular_distance_np)

    assert loss.dtype == dtype
    np.testing.assert_allclose(float(loss), loss_np, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dist_metric", ["angular", "squared-L2", "L2"])
def test_labels_of_shape_b_by_1_equal_flat_labels(dist_metric):
    """tfa reshapes labels to [B, 1]; expected = the loss with labels [B] and the numpy loop reference."""
    labels, embedding = random_batch(5)
    loss_fn = TripletSemiHardLoss(margin=0.3, distance_metric=dist_metric)

    flat = loss_fn(labels, embedding)
    column = loss_fn(labels.reshape(-1, 1), embedding)

    np.testing.assert_allclose(column.numpy(), flat.numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(
        column.numpy(), triplet_semihard_loss_np(labels, embedding, 0.3, DIST_FUNCS[dist_metric]), 1e-6, 1e-6
    )


def test_docstring_example_l2():
    """tfa's docstring: labels [0, 0], embeddings (0, 1) and (1, 0), L2 → 2.4142137.

    Derivation: there is no negative, so tfa's masked maximum falls back to the row minimum, d(a, a) = 0;
    each of the two ordered positive pairs costs margin + sqrt(2) - 0 = 1 + 1.41421356.
    """
    loss = triplet_semihard_loss(tf.constant([0, 0]), tf.constant([[0.0, 1.0], [1.0, 0.0]]), distance_metric="L2")
    np.testing.assert_allclose(loss.numpy(), 1.0 + np.sqrt(2.0), rtol=1e-6)
    np.testing.assert_allclose(loss.numpy(), 2.4142137, rtol=1e-6)


def test_docstring_example_callable_distance():
    """tfa's docstring: the same batch with distance x @ x.T → 1.0.

    Derivation: the "distances" are [[1, 0], [0, 1]]; d(a, p) = 0, no negative, the row minimum is 0, so
    each pair costs margin + 0 - 0 = 1.
    """
    def dot_product(x):
        return tf.linalg.matmul(x, x, transpose_b=True)

    embeddings = tf.constant([[0.0, 1.0], [1.0, 0.0]])
    loss = triplet_semihard_loss(tf.constant([0, 0]), embeddings, distance_metric=dot_product)
    keras_loss = TripletSemiHardLoss(distance_metric=dot_product)(tf.constant([0, 0]), embeddings)
    np.testing.assert_allclose([loss.numpy(), keras_loss.numpy()], [1.0, 1.0], rtol=1e-7)


# Four 1-d posters on a line at 0, 1, 3, 10; hand-worked numbers below use these.
LINE = np.array([[0.0], [1.0], [3.0], [10.0]], np.float32)


def test_hand_computed_value_on_a_line():
    """Labels [0, 0, 1, 1], L2, margin 2.5 → 2.25.

    Derivation (d = |x - y|): pair (0→1): d_ap 1, negatives {3, 10}, first beyond 1 is 3: 2.5 + 1 - 3 = 0.5.
    (1→0): d_ap 1, negatives {2, 9} → 2: 1.5. (3→10): d_ap 7, negatives {3, 2}, none beyond 7, so the
    farthest, 3: 2.5 + 7 - 3 = 6.5. (10→3): d_ap 7, negatives {10, 9} → 9: 0.5. Mean (0.5+1.5+6.5+0.5)/4.
    """
    loss = TripletSemiHardLoss(margin=2.5, distance_metric="L2")(np.array([0, 0, 1, 1]), LINE)
    np.testing.assert_allclose(loss.numpy(), 2.25, rtol=1e-6)


def test_a_negative_as_far_as_the_positive_is_not_semi_hard():
    """Posters at 0, 1 (class 0) and -1, 5 (class 1); L2, margin 1 → 1.75 (2.0 if ties counted as semi-hard).

    Derivation: (0→1): d_ap 1, negatives at 1 (tie) and 5; semi-hard means strictly farther, so 5: 1+1-5 < 0: 0.
    (1→0): d_ap 1, negatives {2, 4} → 2: 0. (-1→5): d_ap 6, negatives {1, 2}, none beyond 6, so the farthest,
    2: 5. (5→-1): d_ap 6, negatives {5, 4} → 5: 2. Mean (0 + 0 + 5 + 2) / 4. All distances are exact in float32.
    """
    embedding = np.array([[0.0], [1.0], [-1.0], [5.0]], np.float32)
    loss = TripletSemiHardLoss(margin=1.0, distance_metric="L2")(np.array([0, 0, 1, 1]), embedding)
    np.testing.assert_allclose(loss.numpy(), 1.75, rtol=1e-7)


@pytest.mark.parametrize("dist_metric", ["angular", "squared-L2", "L2"])
def test_zero_loss_when_classes_are_well_separated(dist_metric):
    """Two tight clusters around orthogonal directions, margin 0.1 → 0.

    Derivation: within a cluster d(a, p) <= ~0.03 (angular ~5e-4), across clusters d(a, n) >= ~1 (angular
    ~1, squared-L2 ~2), so margin + d(a, p) - d(a, n) < 0 for every triplet and the hinge gives 0.
    """
    rng = np.random.default_rng(6)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    embedding = np.repeat(centres, 4, axis=0) + 0.01 * rng.standard_normal((8, 3))
    labels = np.repeat([0, 1], 4)

    loss = TripletSemiHardLoss(margin=0.1, distance_metric=dist_metric)(labels, embedding.astype(np.float32))

    assert loss.numpy() == 0.0
    assert triplet_semihard_loss_np(labels, embedding, 0.1, DIST_FUNCS[dist_metric]) == 0.0


def test_no_positive_pair_gives_nan_as_tfa():
    """All labels distinct: tfa divides 0 by 0 positives → NaN. The P×K sampler never builds such a batch."""
    labels, embedding = np.arange(4), np.eye(4, dtype=np.float32)
    assert np.isnan(triplet_semihard_loss(labels, embedding).numpy())


def test_keras_model_compiles_and_trains_with_the_loss():
    """tfa's test_keras_model_compile_semihard, plus one training step with the class and with the function."""
    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(10)])
    features = np.random.default_rng(7).random((8, 784)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])

    model.compile(loss=TripletSemiHardLoss(margin=0.1, distance_metric="angular"), optimizer="adam")
    assert np.isfinite(model.train_on_batch(features, labels))
    model.compile(loss=triplet_semihard_loss, optimizer="adam")
    assert np.isfinite(model.train_on_batch(features, labels))


def test_serialization_round_trip():
    """tfa's test_serialization_semihard, with our arguments checked to survive the round trip."""
    loss = TripletSemiHardLoss(margin=0.1, distance_metric="angular", name="triplet", positives="shared_genre")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))

    assert isinstance(restored, TripletSemiHardLoss)
    assert restored.get_config() == loss.get_config()
    assert (restored.margin, restored.distance_metric, restored.positives, restored.name) == (
        0.1, "angular", "shared_genre", "triplet"
    )


@keras.saving.register_keras_serializable(package="posters_test")
def manhattan_distance(embeddings):
    return tf.reduce_sum(tf.abs(embeddings[:, None, :] - embeddings[None, :, :]), axis=-1)


def test_serialization_of_a_registered_callable_distance():
    """A registered distance function survives get_config/from_config; expected = the same loss value."""
    labels, embedding = random_batch(8)
    loss = TripletSemiHardLoss(margin=0.2, distance_metric=manhattan_distance, dtype="float64")
    restored = TripletSemiHardLoss.from_config(loss.get_config())

    assert restored.distance_metric is manhattan_distance and restored.dtype == "float64"
    expected = semihard_loss_from_adjacency_np(
        labels[:, None] == labels[None, :], np.abs(embedding[:, None] - embedding[None]).sum(-1), 0.2
    )
    np.testing.assert_allclose(restored(labels, embedding).numpy(), expected, rtol=1e-6)


def test_model_with_the_loss_saves_and_loads(tmp_path):
    """The class is registered under package "posters", so a compiled .keras model loads back with it."""
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3)])
    model.compile(loss=TripletSemiHardLoss(margin=0.1, distance_metric="angular"), optimizer="adam")
    model.train_on_batch(np.eye(4, dtype=np.float32), np.array([0, 0, 1, 1]))
    model.save(tmp_path / "model.keras")

    loaded = keras.saving.load_model(tmp_path / "model.keras")

    assert isinstance(loaded.loss, TripletSemiHardLoss)
    assert (loaded.loss.margin, loaded.loss.distance_metric) == (0.1, "angular")


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean", None])
def test_keras_reduction_returns_the_core_scalar(reduction):
    """tfa's class returned the scalar untouched; Keras 3 reductions leave a scalar as is. Expected = the core."""
    labels, embedding = random_batch(9)
    loss = TripletSemiHardLoss(margin=0.2, reduction=reduction)(labels, embedding)
    assert loss.shape == ()
    np.testing.assert_allclose(loss.numpy(), triplet_semihard_loss(labels, embedding, 0.2).numpy(), rtol=1e-7)


def test_unknown_distance_metric_names_the_choices():
    with pytest.raises(ValueError, match="L2, squared-L2, angular"):
        TripletSemiHardLoss(distance_metric="cosine")
    with pytest.raises(ValueError, match="L2, squared-L2, angular"):
        triplet_semihard_loss([0, 0, 1], np.eye(3, dtype=np.float32), distance_metric="L_2")


def test_unknown_positives_mode_names_the_choices():
    with pytest.raises(ValueError, match="labels, shared_genre"):
        TripletSemiHardLoss(positives="genre")


# --- tfa's metric_test.py: the distance matrices --------------------------------------------------------


def test_pairwise_distance_is_zero_for_equal_embeddings():
    distances = losses.pairwise_distance(tf.constant([[1.0, 0.5], [1.0, 0.5]]), squared=False)
    np.testing.assert_allclose(tf.math.reduce_sum(distances), 0, 1e-6, 1e-6)


def test_pairwise_distance_is_never_negative():
    """Embeddings within 2e-7 of each other provoke round-off in |a|^2 + |b|^2 - 2ab."""
    embeddings = 1.0 + 2e-7 * tf.random.stateless_uniform([64, 6], seed=(1, 2), dtype=tf.float32)
    assert np.all(losses.pairwise_distance(embeddings, squared=False).numpy() >= 0)


@pytest.mark.parametrize("squared, off_diagonal", [(False, np.sqrt(2) / 2), (True, 0.5)])
def test_pairwise_distance_correct_values(squared, off_diagonal):
    """(0.5, 0.5) and (1, 1) are sqrt(0.5^2 + 0.5^2) = sqrt(2)/2 apart; squared 0.5."""
    distances = losses.pairwise_distance(tf.constant([[0.5, 0.5], [1.0, 1.0]]), squared=squared)
    np.testing.assert_allclose(distances, [[0, off_diagonal], [off_diagonal, 0]], 1e-6, 1e-6)


def test_angular_distance_is_one_minus_cosine_similarity():
    """Expected = tfa's angular_distance_np (1 - cosine similarity of L2-normalised rows), clipped at 0."""
    _, embedding = random_batch(10)
    np.testing.assert_allclose(
        losses.angular_distance(tf.constant(embedding)), np.maximum(angular_distance_np(embedding), 0), 1e-6, 1e-6
    )


# --- gradients ------------------------------------------------------------------------------------------


def _direct_distance(a, b, metric):
    if metric == "L2":
        return tf.norm(a - b)
    if metric == "squared-L2":
        return tf.reduce_sum(tf.square(a - b))
    return 1.0 - tf.reduce_sum(a * b) / (tf.norm(a) * tf.norm(b))


def reference_loss_with_loops(labels, embeddings, margin, metric):
    """An independent TF reference: one distance op per pair, negatives chosen by plain Python loops.

    The choice of negative is piecewise constant, so it is made on numpy values; the loss is then built from
    directly computed distances so that autodiff sees only d(a, p) and d(a, n).
    """
    n = len(labels)
    d = [[_direct_distance(embeddings[i], embeddings[j], metric) for j in range(n)] for i in range(n)]
    values = np.array([[float(x) for x in row] for row in d])
    total, count = tf.constant(0.0, embeddings.dtype), 0
    for a in range(n):
        negatives = sorted((values[a, k], k) for k in range(n) if labels[k] != labels[a])
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            beyond = [k for dist, k in negatives if dist > values[a, p]]
            chosen = beyond[0] if beyond else negatives[-1][1]
            total += tf.maximum(0.0, margin + d[a][p] - d[a][chosen])
            count += 1
    return total / count


@pytest.mark.parametrize("dtype, tolerance", [(tf.float64, 1e-10), (tf.float32, 1e-5)])
@pytest.mark.parametrize("dist_metric", ["angular", "squared-L2", "L2"])
def test_gradient_matches_loop_reference(dtype, tolerance, dist_metric):
    """Expected = autodiff gradient of `reference_loss_with_loops` (independent of the vectorised masks)."""
    labels, embedding = random_batch(11, num_data=8, feat_dim=4, num_classes=3)
    x = tf.constant(embedding, dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = TripletSemiHardLoss(margin=0.5, distance_metric=dist_metric, dtype=dtype.name)(labels, x)
        reference = reference_loss_with_loops(labels, x, 0.5, dist_metric)

    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=tolerance, atol=tolerance)
    assert float(tf.reduce_max(tf.abs(tape.gradient(reference, x)))) > 0
    np.testing.assert_allclose(tape.gradient(ours, x), tape.gradient(reference, x), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dist_metric", ["angular", "squared-L2", "L2"])
def test_gradient_matches_finite_differences(dist_metric):
    """Expected = central finite differences (tf.test.compute_gradient, float64, delta 1e-6)."""
    labels, embedding = random_batch(12, num_data=6, feat_dim=3, num_classes=2)

    def loss_of(x):
        return triplet_semihard_loss(labels, x, margin=0.5, distance_metric=dist_metric)

    theoretical, numerical = tf.test.compute_gradient(loss_of, [tf.constant(embedding, tf.float64)], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5, atol=1e-5)


# --- multi-label positives: shared genres ---------------------------------------------------------------


def test_shared_genre_mask():
    """Rows: {Action}, {Action, Comedy}, {Comedy}, {} → pairs sharing a genre by inspection."""
    multi_hot = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    expected = np.array(
        [[1, 1, 0, 0],
         [1, 1, 1, 0],
         [0, 1, 1, 0],
         [0, 0, 0, 0]], bool
    )
    np.testing.assert_array_equal(shared_genre_mask(multi_hot).numpy(), expected)


@pytest.mark.parametrize("dist_metric", ["angular", "squared-L2", "L2"])
def test_shared_genre_with_one_genre_per_poster_equals_tfa_mode(dist_metric):
    """With one-hot genres, sharing a genre is label equality: expected = the tfa-mode loss, bit for bit."""
    labels, embedding = random_batch(13)
    one_hot = np.eye(4, dtype=np.float32)[labels]

    tfa_mode = TripletSemiHardLoss(margin=0.1, distance_metric=dist_metric)(labels, embedding)
    genre_mode = TripletSemiHardLoss(margin=0.1, distance_metric=dist_metric, positives="shared_genre")(
        one_hot, embedding
    )
    np.testing.assert_array_equal(genre_mode.numpy(), tfa_mode.numpy())


def test_shared_genre_with_overlapping_genres_on_a_line():
    """Posters at 0, 1, 3, 10 with genres {A}, {A, C}, {C}, {D}; L2, margin 2.5 → 0.5 (primary genre: 1.0).

    Derivation, shared genres: positives are (0,1), (1,0), (1,3), (3,1). (0→1): d_ap 1, negatives {3, 10} → 3:
    0.5. (1→0): negatives of 1 are only {9} → 2.5 + 1 - 9 < 0: 0. (1→3): d_ap 2 → 9: 0. (3→1): d_ap 2,
    negatives {3, 7} → 3: 1.5. Mean 2 / 4 = 0.5.
    Primary genre (labels A, A, C, D): positives (0,1) → 0.5 and (1,0) with negatives {2, 9} → 2: 1.5; mean 1.0.
    """
    multi_hot = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    genre_loss = TripletSemiHardLoss(margin=2.5, positives="shared_genre")(multi_hot, LINE)
    primary_loss = TripletSemiHardLoss(margin=2.5)(np.array([0, 0, 1, 2]), LINE)

    np.testing.assert_allclose(genre_loss.numpy(), 0.5, rtol=1e-6)
    np.testing.assert_allclose(primary_loss.numpy(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dist_metric", ["angular", "squared-L2", "L2"])
def test_shared_genre_matches_the_loop_reference_on_random_genres(dist_metric):
    """Expected = tfa's loop reference with 'shares a genre' as adjacency (diagonal forced True)."""
    rng = np.random.default_rng(14)
    embedding = rng.random((12, 5)).astype(np.float32)
    multi_hot = (rng.random((12, 8)) < 0.15).astype(np.float32)
    multi_hot[np.arange(12), rng.integers(0, 8, 12)] = 1  # every poster has at least one genre
    adjacency = (multi_hot @ multi_hot.T > 0) | np.eye(12, dtype=bool)
    assert adjacency.sum() > 12 and not adjacency.all(axis=1).any()  # positives exist, every anchor has negatives

    loss = TripletSemiHardLoss(margin=0.2, distance_metric=dist_metric, positives="shared_genre")(
        multi_hot, embedding
    )
    expected = semihard_loss_from_adjacency_np(adjacency, DIST_FUNCS[dist_metric](embedding), 0.2)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_positive_mask_diagonal_is_ignored():
    """The mask's diagonal carries no meaning: True or False there, expected = the same loss."""
    labels, embedding = random_batch(15)
    same = labels[:, None] == labels[None, :]
    without_diagonal = same & ~np.eye(len(labels), dtype=bool)

    with_diag = triplet_semihard_loss(None, embedding, positive_mask=same)
    without = triplet_semihard_loss(None, embedding, positive_mask=without_diagonal)
    np.testing.assert_array_equal(with_diag.numpy(), without.numpy())
    np.testing.assert_array_equal(with_diag.numpy(), triplet_semihard_loss(labels, embedding).numpy())


# --- usable on a gathered global batch ------------------------------------------------------------------


def test_loss_does_not_depend_on_batch_order():
    """A gathered global batch comes in replica order; expected = the same loss for any permutation."""
    labels, embedding = random_batch(16, num_data=16)
    order = np.random.default_rng(17).permutation(16)
    np.testing.assert_allclose(
        triplet_semihard_loss(labels[order], embedding[order], 0.1, "angular").numpy(),
        triplet_semihard_loss(labels, embedding, 0.1, "angular").numpy(),
        rtol=1e-6,
    )


def test_core_traces_with_an_unknown_batch_size():
    """In a distributed step the gathered batch size is dynamic; expected = the eager value."""
    labels, embedding = random_batch(18)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, 6], tf.float32)])
    def traced(y, x):
        return triplet_semihard_loss(y, x, 0.1, "angular", positive_mask=None)

    np.testing.assert_allclose(
        traced(labels, embedding).numpy(), triplet_semihard_loss(labels, embedding, 0.1, "angular").numpy(), 1e-6
    )
