"""The streamed input: P×K batches from per-genre record files, every eval poster once, input pipelines, gs://."""
import os

import numpy as np
import pytest

from pipelines.contracts import FEATURE_PRIMARY_GENRE
from tests.trainer.fixtures import GENRES, poster_split, write_preprocess_output
from trainer import streaming
from trainer.data import TrainingDataError, read_genre_vocabulary
from trainer.distribute import make_strategy

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_preprocess_output(str(tmp_path_factory.mktemp("preprocessed")), n_train=48, n_eval=24, shards=3)


def _train(data, cache, pipelines=None):
    return streaming.open_train(data, list(GENRES), SIZE, pipelines, make_strategy("default"), str(cache))


def test_the_index_pass_counts_posters_per_genre_and_keeps_no_pixels(data, tmp_path):
    train = _train(data, tmp_path)
    (shards,) = train.pipelines
    assert (train.examples, train.eligible, train.num_pipelines) == (48, 48, 1)
    np.testing.assert_array_equal(shards.genre_counts, np.bincount(poster_split(48).primary_genre))
    assert all(os.path.getsize(path) > 0 for path in shards.genre_files)  # on local disk, not in memory


def test_pk_batches_hold_p_distinct_genres_with_k_posters_each(data, tmp_path):
    batches = streaming.pk_batches(_train(data, tmp_path), 3, 4, seed=0, epochs=1, steps=5, first_epoch=0,
                                   shuffle_buffer=64, target=FEATURE_PRIMARY_GENRE)
    drawn = [(pixels.numpy(), genres.numpy()) for pixels, genres in batches]
    assert len(drawn) == 5
    for pixels, genres in drawn:
        assert pixels.shape == (12, SIZE, SIZE, 3) and pixels.dtype == np.uint8
        by_class = genres.reshape(3, 4)
        assert (by_class == by_class[:, :1]).all() and len(set(by_class[:, 0])) == 3


def test_a_resumed_pk_stream_continues_where_the_full_one_was(data, tmp_path):
    def genres(first_epoch):
        batches = streaming.pk_batches(_train(data, tmp_path), 2, 2, seed=1, epochs=3, steps=4,
                                       first_epoch=first_epoch, shuffle_buffer=64, target=FEATURE_PRIMARY_GENRE)
        return [pixels.numpy() for pixels, _ in batches]

    full, resumed = genres(0), genres(2)
    assert len(full) == 12 and len(resumed) == 4
    np.testing.assert_array_equal(np.stack(full[8:]), np.stack(resumed))


def test_every_eval_poster_is_read_once(data, tmp_path):
    evaluation = streaming.open_eval(data, list(GENRES), SIZE, str(tmp_path))
    labels = np.concatenate([labels.numpy() for _, labels in streaming.eval_batches(evaluation, batch=10)])
    assert evaluation.examples == len(labels) == 24
    np.testing.assert_array_equal(labels.sum(axis=0), poster_split(24, seed=1).labels.sum(axis=0))


def test_two_input_pipelines_split_the_shards_and_each_global_batch(data, tmp_path):
    train = _train(data, tmp_path, pipelines=2)
    assert [shards.files for shards in train.pipelines] == [
        [path for path in sorted(streaming.split_shards(data, "train"))][p::2] for p in (0, 1)]
    pixels, labels = next(iter(streaming.genre_batches(train, 8, seed=0, shuffle_buffer=16)))
    assert pixels.shape[0] == labels.shape[0] == 8


def test_more_input_pipelines_than_shards_is_a_clear_error(data, tmp_path):
    with pytest.raises(TrainingDataError, match="3 shard\\(s\\), fewer than the 4 input pipelines"):
        _train(data, tmp_path, pipelines=4)


def test_gcs_shards_are_copied_locally_and_streamed(data, tmp_path, gcs_emulator):
    from pipelines.common import storage

    for folder, _, names in os.walk(data):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                storage.write_bytes(gcs_emulator.uri("data/" + os.path.relpath(os.path.join(folder, name), data)),
                                    handle.read())
    assert read_genre_vocabulary(gcs_emulator.uri("data")) == list(GENRES)  # the transform output, copied too
    train = _train(gcs_emulator.uri("data"), tmp_path)
    assert train.examples == 48 and all(path.startswith(str(tmp_path)) for path in train.pipelines[0].files)
    evaluation = streaming.open_eval(gcs_emulator.uri("data"), list(GENRES), SIZE, str(tmp_path / "eval"))
    assert evaluation.examples == 24
