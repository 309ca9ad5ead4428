"""The two phases alone: progressive unfreezing trains only the unfrozen blocks; shared-genre positives."""
import keras
import numpy as np

from tests.trainer.fixtures import GENRES, tiny_config, write_preprocess_output
from trainer import losses, phases, streaming, train
from trainer.distribute import make_strategy
from trainer.model import build_model, embedding_model
from trainer.work_dir import WorkDir


def train_input(tmp_path, config, **fixture) -> streaming.TrainInput:
    """The streamed train split of a tiny preprocess output (48 posters, 4 genres)."""
    data = write_preprocess_output(str(tmp_path / "data"), **fixture)
    return streaming.open_train(data, list(GENRES), config.model.input_size, config.train.input_pipelines,
                                make_strategy("default"), str(tmp_path / "cache"))


def test_progressive_unfreezing_trains_only_the_unfrozen_blocks(tmp_path):
    config = tiny_config('train.unfreeze_schedule=[["block_3"], ["block_2"]]')
    keras.utils.set_random_seed(0)
    model = build_model(config.model, num_genres=4)
    backbone = model.get_layer("backbone")

    def snapshot():
        return {w.path: w.numpy().copy() for w in backbone.weights + model.get_layer("embedding").weights}

    class Snapshots(keras.callbacks.Callback):
        taken = [snapshot()]

        def on_epoch_end(self, epoch, logs=None):
            self.taken.append(snapshot())

    phases.train_genres(model, train_input(tmp_path, config), config, make_strategy("default"),
                        WorkDir(str(tmp_path / "work")), callbacks=[Snapshots()], verbose=0)
    start, after_1, after_2 = Snapshots.taken

    def changed(before, after):
        return {path for path in before if not np.array_equal(before[path], after[path])}

    # From random weights (model.freeze_batchnorm: auto) an unfrozen block's BatchNormalization trains too: its scale
    # and offset, and the moving statistics of its batches; a frozen block's stay as they were.
    def block(n):
        return {f"block_{n}_conv/kernel", *(f"block_{n}_bn/{w}" for w in ("gamma", "beta", "moving_mean",
                                                                          "moving_variance"))}

    head = {"embedding/kernel", "embedding/bias"}
    assert changed(start, after_1) == block(3) | head
    assert changed(after_1, after_2) == block(3) | block(2) | head


def test_shared_genre_positives_train(tmp_path):
    """With `train.positives=shared_genre` phase 2's loss takes as positives every pair that shares a genre."""
    # BatchNormalization frozen: the loss below, of inference-mode embeddings, is then the one training reports.
    config = tiny_config("train.positives=shared_genre", "train.metric_epochs=1", "train.steps_per_epoch=1",
                         "model.freeze_batchnorm=true")
    settings, split = config.train, train_input(tmp_path, config)
    keras.utils.set_random_seed(0)
    model = build_model(config.model, num_genres=4)
    # The one batch the epoch trains on, embedded by the weights it starts from (the loss reported is theirs).
    pixels, multi_hot = next(iter(phases.metric_learning_batches(split, settings, steps=1, first_epoch=0)))
    embeddings = embedding_model(model)(pixels, training=False)
    margin, metric = settings.triplet_margin, settings.triplet_distance
    shared = float(losses.triplet_semihard_loss(None, embeddings, margin, metric,
                                                positive_mask=losses.shared_genre_mask(multi_hot)))
    # A P×K batch is class-major, P distinct primary genres: the group ids are as good as the genre ids.
    groups = np.repeat(np.arange(settings.classes_per_batch), settings.examples_per_class)
    primary = float(losses.triplet_semihard_loss(groups, embeddings, margin, metric))
    assert abs(shared - primary) > 1e-3  # the batch tells the two kinds of positives apart

    work = WorkDir(str(tmp_path / "work"))
    info = phases.train_metric(model, split, config, make_strategy("default"), work, verbose=0)
    loss = train.read_history(work, "phase2")["loss"]
    assert info["global_batch"] == 16 and len(loss) == 1
    np.testing.assert_allclose(loss[0], shared, rtol=1e-4)
