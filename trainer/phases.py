"""The seed's two training phases, as Keras fits with their callbacks.

    phase 1  genre warm-up: BinaryCrossentropy(from_logits) on the multi-hot genres, the backbone unfrozen
             step by step from `train.unfreeze_schedule` (one step per epoch), BatchNormalization frozen when the
             backbone starts from pretrained weights (`model.freeze_batchnorm`)
    phase 2  metric learning: semi-hard triplet loss on the L2-normalised embedding, P×K batches, negatives
             mined over the global batch (all replicas); scored on the eval split after every epoch, the best
             epoch's weights kept (trainer/evaluation.py `EvalEarlyStopping`)

Both read the train split as streams (`trainer/streaming.py`). Each phase checkpoints under `work/<phase>/`
(BackupAndRestore), logs a CSV history and TensorBoard scalars, and mirrors them to a gs:// work directory after
every epoch (`trainer/work_dir.py`); `trainer/train.py` decides when to run them, resumes them and exports the result.
"""
from __future__ import annotations

import json
import os

import keras
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from pipelines.config import Config, TrainConfig
from pipelines.contracts import FEATURE_LABELS, FEATURE_PRIMARY_GENRE
from trainer import losses, streaming
from trainer.data import TrainingDataError
from trainer.distribute import check_divides, distribute_batches, global_batch_size, is_multi_worker
from trainer.evaluation import EvalEarlyStopping
from trainer.model import MetricLearner, batchnorm_frozen, embedding_model, set_trainable, unfrozen_patterns
from trainer.sampler import batches_per_epoch
from trainer.streaming import EvalInput, TrainInput
from trainer.work_dir import WorkDir

# --- phase 1 ------------------------------------------------------------------------------------------------

class ProgressiveUnfreezing(keras.callbacks.Callback):
    """At each warm-up epoch, makes trainable what the schedule has unfrozen so far.

    Keras captures the trainable variables when it traces the train step, so the step is retraced whenever
    the set changes. The optimizer was built over every variable the schedule will ever unfreeze: Adam's
    moments of the layers already training carry over, newly unfrozen layers start from zero moments.
    """

    def __init__(self, schedule: list[list[str]], freeze_batchnorm: bool):
        super().__init__()
        self.schedule, self.freeze_batchnorm = schedule, freeze_batchnorm
        self.trainable_by_epoch: dict[int, list[str]] = {}
        self._patterns = None

    def on_epoch_begin(self, epoch, logs=None):
        patterns = unfrozen_patterns(self.schedule, epoch)
        if patterns != self._patterns:
            self.trainable_by_epoch[epoch] = set_trainable(self.model, patterns, self.freeze_batchnorm)
            self.model.make_train_function(force=True)
            self._patterns = patterns
            print(f"warm-up epoch {epoch + 1}: {len(self.trainable_by_epoch[epoch])} backbone layers trainable "
                  f"({', '.join(patterns) or 'heads only'})", flush=True)


def train_genres(model: keras.Model, train: TrainInput, config: Config, strategy, work: WorkDir,
                 callbacks=(), verbose=2) -> dict:
    """Phase 1 on `model` (built under `strategy`). Returns {"steps_per_epoch", "global_batch", "trainable"}."""
    settings = config.train
    batch = global_batch_size(settings.per_replica_batch_size, strategy)
    if train.examples < batch:
        raise TrainingDataError(f"the train split has {train.examples} posters, fewer than one global batch of "
                                f"{batch}; lower train.per_replica_batch_size or add posters")
    steps = settings.steps_per_epoch or max(1, train.examples // batch)
    schedule, freeze_batchnorm = settings.unfreeze_schedule, batchnorm_frozen(config.model)
    # A resumed run skips the batches of the epochs already trained: it sees the stream it would have seen.
    skip = resumed_epoch(work, "phase1") * steps
    dataset = distribute_batches(strategy, lambda: streaming.genre_batches(
        train, batch, settings.seed, settings.shuffle_buffer, skip_batches=skip), batch)
    with strategy.scope():
        optimizer = keras.optimizers.Adam(settings.warmup_learning_rate)
        set_trainable(model, unfrozen_patterns(schedule, len(schedule)), freeze_batchnorm)
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      metrics=[keras.metrics.AUC(multi_label=True, from_logits=True, name="auc")])
    unfreezing = ProgressiveUnfreezing(schedule, freeze_batchnorm)
    # shuffle=False: the dataset shuffles itself (seeded); Keras' own flag applies to arrays only.
    model.fit(dataset, epochs=settings.warmup_epochs, steps_per_epoch=steps, verbose=verbose, shuffle=False,
              callbacks=[*_hygiene_callbacks(work, "phase1"), unfreezing, *callbacks])
    return {"steps_per_epoch": steps, "global_batch": batch,
            "trainable_backbone_layers": {str(e + 1): len(v) for e, v in unfreezing.trainable_by_epoch.items()}}


# --- phase 2 ------------------------------------------------------------------------------------------------

def triplet_loss_fn(settings: TrainConfig):
    """(targets, embeddings) → the semi-hard triplet loss of the batch, positives by `train.positives`."""
    margin, metric = settings.triplet_margin, settings.triplet_distance

    def primary_genre_loss(genre_ids, embeddings):
        return losses.triplet_semihard_loss(genre_ids, embeddings, margin, metric)

    def shared_genre_loss(multi_hot, embeddings):
        return losses.triplet_semihard_loss(None, embeddings, margin, metric,
                                            positive_mask=losses.shared_genre_mask(multi_hot))

    return shared_genre_loss if settings.positives == "shared_genre" else primary_genre_loss


def metric_learning_batches(train: TrainInput, settings: TrainConfig, steps: int, first_epoch: int):
    """This worker's share of phase 2's P×K batches, epochs `first_epoch`… (a resumed run skips the trained ones).

    The sampler fixes each epoch's genres by (seed, epoch, input pipeline), and each genre's stream is seeded, so a
    resumed run sees the batches it would have.
    """
    target = FEATURE_LABELS if settings.positives == "shared_genre" else FEATURE_PRIMARY_GENRE
    return streaming.pk_batches(train, settings.classes_per_batch, settings.examples_per_class, settings.seed,
                                settings.metric_epochs, steps, first_epoch, settings.shuffle_buffer, target)


def train_metric(model: keras.Model, train: TrainInput, config: Config, strategy, work: WorkDir,
                 callbacks=(), verbose=2, evaluation: EvalInput | None = None, eval_batch: int = 0) -> dict:
    """Phase 2 on `model`'s embedding (L2-normalised). Returns {"steps_per_epoch", "global_batch"} and, with
    `train.early_stopping_patience`, the best epoch and its eval score (`evaluation`: the chief's eval split, None
    on the other workers; None on a single worker: no early stopping)."""
    settings = config.train
    batch = settings.classes_per_batch * settings.examples_per_class
    check_divides(batch, strategy, "train.classes_per_batch × train.examples_per_class")
    steps = settings.steps_per_epoch or batches_per_epoch(train.eligible, settings.classes_per_batch,
                                                          settings.examples_per_class)
    first_epoch = resumed_epoch(work, "phase2")
    dataset = distribute_batches(strategy, lambda: metric_learning_batches(train, settings, steps, first_epoch), batch)
    # Phase 2 trains what phase 1 ended with (the schedule's last step reached).
    set_trainable(model, unfrozen_patterns(settings.unfreeze_schedule, max(settings.warmup_epochs - 1, 0)),
                  batchnorm_frozen(config.model))
    with strategy.scope():
        learner = MetricLearner(embedding_model(model), triplet_loss_fn(settings), name="metric_learner")
        optimizer = keras.optimizers.Adam(settings.metric_learning_rate)
        optimizer.build(learner.trainable_variables)
        learner.compile(optimizer=optimizer)
    hygiene = _hygiene_callbacks(work, "phase2")
    stopping = []
    # Scored where the chief has the eval split (other workers take its score); first: CSVLogger logs the score.
    if settings.early_stopping_patience and (evaluation is not None or is_multi_worker(strategy)):
        stopping = [EvalEarlyStopping(model, learner.embedder, evaluation, eval_batch, settings.early_stopping_patience,
                                      work, "phase2", strategy)]
    learner.fit(dataset, epochs=settings.metric_epochs, steps_per_epoch=steps, verbose=verbose, shuffle=False,
                callbacks=[*stopping, *hygiene, *callbacks])
    return {"steps_per_epoch": steps, "global_batch": batch, **(stopping[0].summary() if stopping else {})}


# --- checkpoints, logs, resuming ----------------------------------------------------------------------------

def _hygiene_callbacks(work: WorkDir, phase: str) -> list[keras.callbacks.Callback]:
    os.makedirs(work.path(phase), exist_ok=True)  # CSVLogger does not create its directory
    # BackupAndRestore first: it restores weights and the epoch before any other callback sees the epoch;
    # SyncWorkDir last: it uploads what the others wrote at the end of the epoch.
    return [keras.callbacks.BackupAndRestore(work.path(phase, "backup")),
            keras.callbacks.CSVLogger(work.path(phase, "history.csv"), append=True),
            EpochSummaries(work.path("logs", phase)), SyncWorkDir(work)]


class SyncWorkDir(keras.callbacks.Callback):
    """Mirrors the work directory to gs:// after every epoch and at the end of training (`WorkDir.sync`)."""

    def __init__(self, work: WorkDir):
        super().__init__()
        self.work = work

    def on_epoch_end(self, epoch, logs=None):
        self.work.sync()

    def on_train_end(self, logs=None):
        self.work.sync()


class EpochSummaries(keras.callbacks.Callback):
    """TensorBoard event files of each epoch's metrics (`tensorboard --logdir OUT/work/logs`).

    Written with TensorFlow's own summary writer: Keras' TensorBoard callback needs the `tensorboard` package,
    which TensorFlow no longer installs and which training does not otherwise need.
    """

    SCALAR = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        with self._writer.as_default():
            for name, value in (logs or {}).items():
                tf.summary.write(f"epoch_{name}", float(value), step=epoch, metadata=self.SCALAR)
        self._writer.flush()

    def on_train_end(self, logs=None):
        self._writer.close()


def resumed_epoch(work: WorkDir, phase: str) -> int:
    """The epoch a phase's BackupAndRestore checkpoint resumes at (0: none)."""
    metadata = work.path(phase, "backup", "training_metadata.json")
    if not os.path.exists(metadata):
        return 0
    with open(metadata) as handle:
        return int(json.load(handle)["epoch"])
