"""`posters train --config C --data DIR --out DIR`: runs the two phases (trainer/phases.py), evaluates, exports.

    phase 1  genre warm-up: BinaryCrossentropy(from_logits) on the multi-hot genres, the backbone unfrozen
             step by step from `train.unfreeze_schedule` (one step per epoch; a pattern that selects no layer is
             refused before training), BatchNormalization frozen when the backbone starts from pretrained weights
    phase 2  metric learning: semi-hard triplet loss on the L2-normalised embedding, P×K batches, negatives
             mined over the global batch (all replicas); the best epoch on the eval split is kept

After each phase a collapse check on the eval embeddings, after phase 2 the no-regression gate (phase 2 against
phase 1 and a colour histogram); either failing ends the run with exit status 1 and exports nothing
(trainer/evaluation.py). Writes under OUT: `model/` (the export, see trainer/export.py), `eval_metrics.json`
(baseline, colour_histogram, phase1, phase2 on the eval split, and the gate's verdict; also written when a check
fails), `training_curves.png`, `train_summary.json`; and under OUT/work (or --work, local or gs://) the
state of an unfinished run: per-phase BackupAndRestore checkpoints, CSV histories and TensorBoard logs
(`trainer/work_dir.py`: a directory the trainer did not make is refused, and a fresh start deletes only what the
trainer writes there). Rerunning the same command after a crash or a kill resumes from the last finished epoch; a
finished run's rerun starts afresh. Under MultiWorkerMirroredStrategy every worker trains and exports (another
worker to a temporary directory it then deletes); only the chief writes outputs and the work directory.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import keras
import numpy as np

from pipelines.common import storage
from pipelines.common.command_line import command_parser, parse_command
from pipelines.config import Config, ConfigError
from pipelines.contracts import EVAL_METRICS_FILE, STATS_FILE, TRAIN_MODEL_DIR, TRAIN_SUMMARY_FILE, TRAINING_CURVES_FILE
from trainer import streaming
from trainer.backbones import BackboneError
from trainer.data import TrainingDataError, read_genre_vocabulary
from trainer.distribute import StrategyError, global_batch_size, is_chief, make_strategy, sum_over_workers
from trainer.evaluation import (
    REFERENCE,
    TrainingFailed,
    collapse_check,
    evaluate_embedding,
    gate_check,
    no_regression_gate,
    reference_metrics,
)
from trainer.export import export_model
from trainer.model import backbone_features_model, build_model, check_unfreeze_schedule, embedding_model
from trainer.phases import resumed_epoch, train_genres, train_metric
from trainer.plots import training_curves_png
from trainer.streaming import EvalInput, TrainInput
from trainer.work_dir import STATE_FILE, WorkDir

PHASES = ("phase1", "phase2")
EMBEDDINGS = ("baseline", REFERENCE, *PHASES)  # what eval_metrics.json scores, beside the gate's verdict
USER_ERRORS = (ConfigError, TrainingDataError, BackboneError, StrategyError, storage.OutputLocationError,
               TrainingFailed)


def read_history(work: WorkDir, phase: str) -> dict[str, list[float]]:
    """metric → one value per epoch from the phase's CSV log (a resumed epoch's last row wins)."""
    path = work.path(phase, "history.csv")
    if not os.path.exists(path):
        return {}
    rows = {}
    with open(path, newline="") as handle:
        lines = list(csv.DictReader(handle))
    for row in lines:
        if row["epoch"] != "epoch":  # a header repeated by an appending rerun
            rows[int(row["epoch"])] = {k: float(v) for k, v in row.items() if k != "epoch" and v not in ("NA", "")}
    names = sorted({name for row in rows.values() for name in row})
    return {name: [rows[e][name] for e in sorted(rows) if name in rows[e]] for name in names}


def run_fingerprint(config: Config, data_dir: str) -> str:
    """What must not change for a run to be resumed: the model and train settings, the data and its stats."""
    stats_uri = storage.join(data_dir, STATS_FILE)
    stats = storage.read_bytes(stats_uri).decode() if storage.exists(stats_uri) else ""
    settings = json.dumps({"model": config.model.model_dump(), "train": config.train.model_dump(), "data": data_dir,
                           "stats": stats}, sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def read_state(work: WorkDir) -> dict | None:
    path = work.path(STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def write_state(work: WorkDir, state: dict) -> None:
    storage.write_json(work.path(STATE_FILE), state)
    work.sync()


def start_or_resume(work: WorkDir, fingerprint: str, vocabulary: list[str], fresh: bool) -> dict:
    """The state of an unfinished run with the same settings, or a new one (what the trainer wrote there cleared).

    An unfinished run with other settings or another genre vocabulary is an error rather than silently lost; a
    non-empty directory the trainer did not make is refused (`WorkDir.claim`).
    """
    work.claim()
    work.restore()
    state = None if fresh else read_state(work)
    if state and not state.get("finished"):
        if state["vocabulary"] != vocabulary:
            raise TrainingDataError(
                f"{work.uri} holds an unfinished run trained on another genre vocabulary ({len(state['vocabulary'])} "
                f"genres, now {len(vocabulary)}); pass --fresh to discard it, or use another --out/--work")
        if state["fingerprint"] != fingerprint:
            raise TrainingDataError(f"{work.uri} holds an unfinished run with other model/train settings or data; "
                                    "rerun with the same ones to resume, or pass --fresh to discard it")
        print(f"train: resuming the unfinished run in {work.uri}", flush=True)
        return state
    work.clear()
    state = {"fingerprint": fingerprint, "vocabulary": vocabulary, "finished": False, "metrics": {}, "phases": {}}
    write_state(work, state)
    return state


def _weights_path(work: WorkDir, phase: str) -> str:
    return work.path(f"{phase}.weights.h5")


# --- the command ----------------------------------------------------------------------------------------------

def run(config: Config, data_dir: str, out_dir: str, work_dir: str | None = None, fresh: bool = False,
        callbacks=()) -> dict:
    """Trains, evaluates and exports; returns the summary also written to `train_summary.json`.

    `callbacks` are added to both phases' `fit` (tests use them to interrupt training).
    """
    storage.check_output_location(out_dir, {"--data": data_dir})
    if work_dir:  # the work directory is cleared when a run starts afresh
        storage.check_output_location(work_dir, {"--data": data_dir}, flag="--work")
    started = time.time()
    keras.utils.set_random_seed(config.train.seed)
    strategy = make_strategy(config.train.strategy)
    vocabulary = read_genre_vocabulary(data_dir)
    with strategy.scope():
        model = build_model(config.model, len(vocabulary))
    check_unfreeze_schedule(model, config.model.backbone, config.train.unfreeze_schedule)  # before any work
    chief = is_chief()
    work = WorkDir(work_dir or storage.join(out_dir, "work"), chief=chief)
    try:
        state = start_or_resume(work, run_fingerprint(config, data_dir), vocabulary, fresh) if chief else None
        sum_over_workers(strategy, np.zeros(1))  # a barrier: the chief has set the work directory up
        if not chief:  # another worker resumes where the chief does, from a copy of the chief's checkpoints
            work.restore()
            state = read_state(work)
        train, evaluation = _open_data(data_dir, vocabulary, config, strategy, work, chief)
        print(f"train: {config.model.backbone} at {config.model.input_size}px, {len(vocabulary)} genres, "
              f"{train.examples} train / {evaluation.examples if evaluation else '-'} eval posters, "
              f"{strategy.num_replicas_in_sync} replica(s), {train.num_pipelines} input pipeline(s)", flush=True)
        try:
            _train_phases(model, state, train, evaluation, config, strategy, work, callbacks)
        except TrainingFailed:
            if chief:  # what the checks saw, beside no model
                storage.write_json(storage.join(out_dir, EVAL_METRICS_FILE), state["metrics"])
            raise
        if not chief:  # every worker saves (collectives may run in it); only the chief's export is published
            _export_and_discard(model, config, vocabulary)
            return {"chief": False, "seconds": round(time.time() - started, 1)}
        summary = _summary(config, data_dir, out_dir, work, state, strategy, train, evaluation)
        summary["model_version"] = _write_outputs(model, config, data_dir, out_dir, summary)
        _mark_finished(work, state)
    finally:
        work.close()
    summary["seconds"] = round(time.time() - started, 1)
    storage.write_json(storage.join(out_dir, TRAIN_SUMMARY_FILE), summary)
    return summary


def _open_data(data_dir: str, vocabulary: list[str], config: Config, strategy, work: WorkDir,
               chief: bool) -> tuple[TrainInput, EvalInput | None]:
    """The streamed train split (this worker's input pipelines) and, on the chief, the eval split."""
    size = config.model.input_size
    train = streaming.open_train(data_dir, vocabulary, size, config.train.input_pipelines, strategy, work.path("cache"))
    if not chief:
        return train, None
    evaluation = streaming.open_eval(data_dir, vocabulary, size, work.path("cache", "eval"))
    if evaluation.examples <= 10:
        raise TrainingDataError(f"the eval split has {evaluation.examples} posters; retrieval@10 needs more than 10: "
                                "raise preprocess.eval_fraction or add posters")
    return train, evaluation


def _export_and_discard(model, config: Config, vocabulary: list[str]) -> None:
    scratch = tempfile.mkdtemp(prefix="posters-worker-export-")
    try:
        export_model(embedding_model(model), os.path.join(scratch, "model"), config.model.backbone,
                     config.model.input_size, vocabulary)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train_phases(model, state: dict, train: TrainInput, evaluation: EvalInput | None, config: Config, strategy,
                  work: WorkDir, callbacks) -> None:
    """Baseline and reference metrics, then each phase not finished yet (a finished one's weights are loaded
    instead), each followed by its collapse check (also a resumed run's), then the no-regression gate.

    Only the chief evaluates and writes the state (`evaluation` is None on the other workers); the checks raise
    TrainingFailed on every worker.
    """
    verbose = 1 if sys.stdout.isatty() else 2
    eval_batch = global_batch_size(config.train.per_replica_batch_size, strategy)
    metrics, genres = state["metrics"], state["vocabulary"]
    if "baseline" not in metrics and evaluation:
        metrics["baseline"] = evaluate_embedding(backbone_features_model(model), evaluation, eval_batch, genres)
        metrics[REFERENCE] = reference_metrics(evaluation, eval_batch, genres)
        write_state(work, state)
    for phase in PHASES:
        if phase in state["phases"]:
            model.load_weights(_weights_path(work, phase))
        else:
            phase_started, resumed = time.time(), resumed_epoch(work, phase)
            print(f"\n=== {phase} ===" + (f" (resuming at epoch {resumed + 1})" if resumed else ""), flush=True)
            if phase == "phase1":
                info = train_genres(model, train, config, strategy, work, callbacks, verbose)
            else:
                info = train_metric(model, train, config, strategy, work, callbacks, verbose, evaluation, eval_batch)
            model.save_weights(_weights_path(work, phase))
            state["phases"][phase] = {**info, "seconds": round(time.time() - phase_started, 1),
                                      "resumed_at_epoch": resumed}
            if evaluation:
                metrics[phase] = evaluate_embedding(embedding_model(model), evaluation, eval_batch, genres)
                write_state(work, state)
        collapse_check(phase, metrics.get(phase) if evaluation else None, config.train, strategy)
    if evaluation:
        metrics["gate"] = no_regression_gate(metrics, config.train.regression_margin)
        write_state(work, state)
    gate_check(metrics.get("gate") if evaluation else None, strategy)


def _summary(config: Config, data_dir, out_dir, work: WorkDir, state, strategy, train: TrainInput,
             evaluation: EvalInput) -> dict:
    histories = {phase: read_history(work, phase) for phase in PHASES}
    outputs = (TRAIN_MODEL_DIR, EVAL_METRICS_FILE, TRAINING_CURVES_FILE, TRAIN_SUMMARY_FILE)
    return {
        "backbone": config.model.backbone, "input_size": config.model.input_size,
        "embedding_dim": config.model.embedding_dim, "genres": state["vocabulary"],
        "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
        "train_examples": train.examples, "eval_examples": evaluation.examples, "data": data_dir,
        "input_pipelines": train.num_pipelines,
        "phases": {phase: {**state["phases"][phase], "history": histories[phase]} for phase in PHASES},
        "eval_metrics": {name: state["metrics"][name] for name in (*EMBEDDINGS, "gate")},
        "outputs": {name: storage.join(out_dir, name) for name in outputs} | {"work": work.uri},
    }


def _write_outputs(model, config: Config, data_dir: str, out_dir: str, summary: dict) -> str:
    """The export, `eval_metrics.json` and `training_curves.png`; returns the model version."""
    meta = export_model(embedding_model(model), storage.join(out_dir, TRAIN_MODEL_DIR), config.model.backbone,
                        config.model.input_size, summary["genres"], extra_meta={"trained_on": data_dir})
    metrics = summary["eval_metrics"]
    histories = {phase: summary["phases"][phase]["history"] for phase in PHASES}
    storage.write_json(storage.join(out_dir, EVAL_METRICS_FILE), metrics)
    storage.write_bytes(storage.join(out_dir, TRAINING_CURVES_FILE), training_curves_png(histories, metrics))
    return meta["model_version"]


def _mark_finished(work: WorkDir, state: dict) -> None:
    state["finished"] = True
    for path in [*map(lambda phase: _weights_path(work, phase), PHASES), work.path("phase2", "best.weights.h5")]:
        if os.path.exists(path):  # only a resume needs them; the export holds the trained model
            os.remove(path)
    shutil.rmtree(work.path("cache"), ignore_errors=True)  # the streamed input's local copies
    write_state(work, state)


def summary_text(summary: dict) -> str:
    if not summary.get("chief", True):
        return f"train: this worker's part done in {summary['seconds']} s; the chief writes the outputs"
    lines = [f"train: {summary['backbone']} → {summary['outputs'][TRAIN_MODEL_DIR]} (model_version "
             f"{summary.get('model_version')}) in {summary['seconds']} s on {summary['replicas']} replica(s)",
             "eval split retrieval, cosine:  precision@10  map@10"]
    for name in EMBEDDINGS:
        values = summary["eval_metrics"][name]
        lines.append(f"  {name:<16} {values['precision_at_10']:>15.3f}  {values['map_at_10']:.3f}")
    gate = summary["eval_metrics"]["gate"]
    if gate["checked"]:
        lines.append(f"no-regression gate passed (phase 2 within train.regression_margin {gate['margin']} of phase 1 "
                     f"and {REFERENCE}, or above)")
    lines.append(f"outputs: {', '.join(summary['outputs'].values())}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = command_parser("train", __doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the preprocess output directory (local or gs://)")
    parser.add_argument("--out", required=True, help="output directory (local or gs://)")
    parser.add_argument("--work", help="checkpoints and TensorBoard logs (default: OUT/work)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard an unfinished run in the work directory instead of resuming it")
    try:
        args, config, unknown = parse_command(parser, argv)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        summary = run(config, args.data, args.out, work_dir=args.work, fresh=args.fresh)
    except USER_ERRORS as err:
        print(f"posters train: {err}", file=sys.stderr)
        return 1
    print(summary_text(summary), flush=True)
    return 0
