"""What the trainer measures on the eval split, and the checks that fail a run instead of exporting a bad model.

    evaluate_embedding   retrieval measures (pipelines.common.retrieval_metrics) and collapse measures
                         (pipelines.common.collapse) of an embedding of the eval split
    reference_metrics    the same retrieval measures of the trivial reference, a 64-bin colour histogram
                         (pipelines.common.image_features, the one `posters evaluate` uses)
    collapse_check       after each phase: spread, effective rank and tied neighbour scores against `train.collapse_*`
    no_regression_gate   after phase 2: precision@10 not below phase 1's, nor the reference's, by more than
                         `train.regression_margin`
    EvalEarlyStopping    phase 2 scored after every epoch; the best epoch's weights kept (also across a resume) and
                         restored at the end; stops after `train.early_stopping_patience` epochs without a better one

Only the chief reads the eval split. A verdict is shared with every worker (`sum_over_workers`), so under
MultiWorkerMirroredStrategy all of them stop together rather than the others waiting on a collective forever.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import keras
import numpy as np

from pipelines.common.collapse import collapse_measures, collapse_problems
from pipelines.common.image_features import colour_histogram
from pipelines.common.retrieval_metrics import retrieval_metrics
from pipelines.config import TrainConfig
from trainer import streaming
from trainer.distribute import sum_over_workers
from trainer.streaming import EvalInput
from trainer.work_dir import WorkDir

K = 10
GATE_METRIC = f"precision_at_{K}"
REFERENCE = "colour_histogram"


class TrainingFailed(RuntimeError):
    """A finished phase failed a check (collapse, no-regression gate): nothing was exported."""


def embed_eval_split(embedder: keras.Model, evaluation: EvalInput, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors [N, dim], multi-hot labels [N, G]) of the eval split, streamed (direct calls: each cut is a new
    model, predict would retrace); only the vectors and labels are kept, N × (dim + genres) floats."""
    vectors, labels = [], []
    for pixels, multi_hot in streaming.eval_batches(evaluation, batch_size):
        vectors.append(embedder(pixels, training=False).numpy())
        labels.append(multi_hot.numpy())
    return np.concatenate(vectors), np.concatenate(labels)


def evaluate_embedding(embedder: keras.Model, evaluation: EvalInput, batch_size: int, genres: list[str]) -> dict:
    """Retrieval metrics of `embedder` on the eval split, overall and by genre, with its collapse measures."""
    vectors, labels = embed_eval_split(embedder, evaluation, batch_size)
    return {**retrieval_metrics(vectors, labels, k=K, genres=genres), "collapse": collapse_measures(vectors, K)}


def reference_metrics(evaluation: EvalInput, batch_size: int, genres: list[str]) -> dict:
    """Retrieval metrics of the colour histogram of the eval split's decoded pixels."""
    histograms, labels = [], []
    for pixels, multi_hot in streaming.eval_batches(evaluation, batch_size):
        histograms.extend(colour_histogram(image) for image in pixels.numpy())
        labels.append(multi_hot.numpy())
    return retrieval_metrics(np.stack(histograms), np.concatenate(labels), k=K, genres=genres)


def collapse_check(phase: str, metrics: Optional[dict], settings: TrainConfig, strategy) -> None:
    """Raises TrainingFailed on every worker when the chief's `metrics` (None elsewhere) show a collapse."""
    problems = collapse_problems(metrics["collapse"], settings.collapse_min_spread,
                                 settings.collapse_min_effective_rank,
                                 settings.collapse_max_tied_share) if metrics else []
    if sum_over_workers(strategy, np.array([float(bool(problems))]))[0] == 0:
        return
    if not problems:
        raise TrainingFailed(f"{phase}: the chief's collapse check failed; nothing was exported")
    raise TrainingFailed(
        f"{phase} collapsed: the eval embeddings are degenerate ({'; '.join(problems)}); nothing was exported. "
        "A backbone from random weights needs trainable BatchNormalization (model.freeze_batchnorm: auto or false), "
        "a lower learning rate, or pretrained model.weights; the bounds are train.collapse_*")


def no_regression_gate(metrics: dict, margin: Optional[float]) -> dict:
    """What the gate saw: phase 2's precision@10 against phase 1's and the reference's, and whether it passed."""
    against = {name: metrics[name][GATE_METRIC] for name in ("phase1", REFERENCE)}
    phase2 = metrics["phase2"][GATE_METRIC]
    below = [] if margin is None else [name for name, value in against.items() if phase2 < value - margin]
    return {"metric": GATE_METRIC, "split": "eval", "phase2": phase2, "against": against, "margin": margin,
            "checked": margin is not None, "passed": not below, "below": below}


def gate_check(gate: Optional[dict], strategy) -> None:
    """Raises TrainingFailed on every worker when the chief's gate (None elsewhere) did not pass."""
    failed = bool(gate) and not gate["passed"]
    if sum_over_workers(strategy, np.array([float(failed)]))[0] == 0:
        return
    if not gate:
        raise TrainingFailed("the chief's no-regression gate failed; nothing was exported")
    worse = ", ".join(f"{name} {gate['against'][name]:.3f}" for name in gate["below"])
    raise TrainingFailed(
        f"no-regression gate: phase 2 scores {GATE_METRIC} {gate['phase2']:.3f} on the eval split, below {worse} "
        f"by more than train.regression_margin {gate['margin']}; nothing was exported. Phase 2 overfits or does not "
        "learn: fewer train.metric_epochs, a lower train.metric_learning_rate, more posters")


class EvalEarlyStopping(keras.callbacks.Callback):
    """Scores the eval split after every epoch (`eval_precision_at_10` in the logs and the CSV history), keeps the
    best epoch's weights of `poster_model` in `work/<phase>/best.weights.h5`, stops after `patience` epochs
    without a better score, and restores the best weights when training ends.

    The best score and epoch sit in `work/<phase>/best.json`, so a resumed run compares against the epochs it did
    not rerun. Only the chief scores (`evaluation` is None elsewhere); its score is shared with every worker.
    """

    def __init__(self, poster_model: keras.Model, embedder: keras.Model, evaluation: Optional[EvalInput],
                 batch_size: int, patience: int, work: WorkDir, phase: str, strategy):
        super().__init__()
        self.poster_model, self.embedder, self.evaluation = poster_model, embedder, evaluation
        self.batch_size, self.patience, self.strategy = batch_size, patience, strategy
        self.weights_path, self.state_path = work.path(phase, "best.weights.h5"), work.path(phase, "best.json")
        self.best: dict = {"epoch": None, "score": -1.0, "wait": 0}
        self.last_epoch: Optional[int] = None

    def on_train_begin(self, logs=None):
        if os.path.exists(self.state_path) and os.path.exists(self.weights_path):
            with open(self.state_path) as handle:
                self.best = json.load(handle)

    def on_epoch_end(self, epoch, logs=None):
        score = 0.0
        if self.evaluation is not None:
            vectors, labels = embed_eval_split(self.embedder, self.evaluation, self.batch_size)
            score = retrieval_metrics(vectors, labels, k=K)[GATE_METRIC]
        score = float(sum_over_workers(self.strategy, np.array([score]))[0])
        if logs is not None:
            logs[f"eval_{GATE_METRIC}"] = score
        self.last_epoch = epoch
        if score > self.best["score"]:
            self.best = {"epoch": epoch, "score": score, "wait": 0}
            self.poster_model.save_weights(self.weights_path)
        else:
            self.best["wait"] += 1
            if self.best["wait"] >= self.patience:
                self.model.stop_training = True
                print(f"early stopping after epoch {epoch + 1}: no better eval {GATE_METRIC} than epoch "
                      f"{self.best['epoch'] + 1}'s {self.best['score']:.3f} for {self.patience} epochs", flush=True)
        with open(self.state_path, "w") as handle:
            json.dump(self.best, handle)

    def on_train_end(self, logs=None):
        if self.best["epoch"] is not None and self.best["epoch"] != self.last_epoch:
            self.poster_model.load_weights(self.weights_path)
            print(f"restored epoch {self.best['epoch'] + 1}'s weights (eval {GATE_METRIC} "
                  f"{self.best['score']:.3f})", flush=True)

    def summary(self) -> dict:
        """{"best_epoch" (1-based), "best_eval_precision_at_10"} for the phase's record."""
        epoch = self.best["epoch"]
        return {"best_epoch": None if epoch is None else epoch + 1, f"best_eval_{GATE_METRIC}": self.best["score"]}
