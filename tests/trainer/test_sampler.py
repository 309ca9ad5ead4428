"""P×K batches: P distinct classes with K examples each, reproducible for a seed, clear errors."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from trainer.sampler import batches_per_epoch, pk_batches

# Skewed genre counts like a real catalog: 40 dramas, 25 comedies, ..., one western; ids are not contiguous.
CLASS_IDS = np.repeat([0, 1, 2, 5, 7, 9], [40, 25, 12, 6, 3, 1])


def class_counts(batch, class_ids=CLASS_IDS):
    return Counter(class_ids[batch].tolist())


def test_every_batch_has_p_distinct_classes_with_k_each():
    batches = list(pk_batches(CLASS_IDS, classes_per_batch=4, examples_per_class=3, seed=1, num_batches=50))

    assert len(batches) == 50
    for batch in batches:
        assert batch.dtype == np.int64 and batch.shape == (12,)
        counts = class_counts(batch)
        assert len(counts) == 4 and set(counts.values()) == {3}


def test_batches_are_class_major():
    """The K indices of one class are contiguous, so replica slices of a batch hold whole classes."""
    batch = next(pk_batches(CLASS_IDS, classes_per_batch=3, examples_per_class=4, seed=2))
    per_class = CLASS_IDS[batch].reshape(3, 4)
    assert (per_class == per_class[:, :1]).all()


def test_large_classes_give_distinct_examples_small_ones_repeat():
    """A class with >= K examples is sampled without replacement; the one-poster class repeats its poster."""
    western = int(np.flatnonzero(CLASS_IDS == 9)[0])
    for batch in pk_batches(CLASS_IDS, classes_per_batch=6, examples_per_class=4, seed=3, num_batches=20):
        for class_id in (0, 1, 2, 5):
            members = batch[CLASS_IDS[batch] == class_id]
            assert len(set(members.tolist())) == 4
        assert batch[CLASS_IDS[batch] == 9].tolist() == [western] * 4


def test_indices_are_valid_and_classes_are_drawn_evenly():
    """Classes are drawn uniformly: over 600 batches of P=2 from 6 classes each class appears ~200 times."""
    batches = np.stack(list(pk_batches(CLASS_IDS, 2, 2, seed=4, num_batches=600)))
    assert batches.min() >= 0 and batches.max() < len(CLASS_IDS)
    appearances = Counter(CLASS_IDS[batches[:, ::2]].ravel().tolist())
    assert set(appearances) == {0, 1, 2, 5, 7, 9}
    assert all(150 < n < 250 for n in appearances.values())


def test_same_seed_and_epoch_give_the_same_batches():
    first = list(pk_batches(CLASS_IDS, 3, 2, seed=5, epoch=1))
    second = list(pk_batches(CLASS_IDS, 3, 2, seed=5, epoch=1))
    np.testing.assert_array_equal(np.stack(first), np.stack(second))


def test_another_seed_or_epoch_gives_other_batches():
    base = np.stack(list(pk_batches(CLASS_IDS, 3, 2, seed=5, epoch=0)))
    assert not np.array_equal(base, np.stack(list(pk_batches(CLASS_IDS, 3, 2, seed=6, epoch=0))))
    assert not np.array_equal(base, np.stack(list(pk_batches(CLASS_IDS, 3, 2, seed=5, epoch=1))))


def test_an_epoch_is_about_one_pass_over_the_examples():
    """87 examples in batches of P*K = 3*4 = 12 → 87 // 12 = 7 batches."""
    assert batches_per_epoch(len(CLASS_IDS), 3, 4) == 7
    assert len(list(pk_batches(CLASS_IDS, 3, 4))) == 7
    assert batches_per_epoch(5, 2, 4) == 1


def test_fewer_than_two_classes_is_an_error():
    with pytest.raises(ValueError, match="at least 2 classes.*has 1"):
        next(pk_batches(np.zeros(10, int), 1, 2))


def test_p_larger_than_the_number_of_classes_is_an_error():
    with pytest.raises(ValueError, match=r"classes_per_batch \(P\) = 7 exceeds the 6 classes.*at most 6"):
        next(pk_batches(CLASS_IDS, 7, 2))


@pytest.mark.parametrize("p, k, message", [(1, 2, r"classes_per_batch \(P\) must be at least 2"),
                                           (2, 1, r"examples_per_class \(K\) must be at least 2")])
def test_p_or_k_below_two_is_an_error(p, k, message):
    with pytest.raises(ValueError, match=message):
        next(pk_batches(CLASS_IDS, p, k))


@pytest.mark.parametrize("class_ids, message", [(np.array([]), "non-empty 1-D"),
                                                (np.zeros((3, 2), int), "non-empty 1-D"),
                                                (np.array([0.0, 1.0]), "must be integers")])
def test_bad_class_ids_are_an_error(class_ids, message):
    with pytest.raises(ValueError, match=message):
        next(pk_batches(class_ids, 2, 2))



