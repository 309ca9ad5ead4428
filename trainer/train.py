"""`posters train --config C --data DIR --out DIR`: runs the two phases (trainer/phases.py), evaluates, exports.

    phase 1  genre warm-up: BinaryCrossentropy(from_logits) on the multi-hot genres, the backbone unfrozen
             step by step from `train.unfreeze_schedule` (one step per epoch), BatchNormalization frozen
    phase 2  metric learning: semi-hard triplet loss on the L2-normalised embedding, P×K batches, negatives
             mined over the global batch (all replicas)

Writes under OUT: `model/` (the export, see trainer/export.py), `eval_metrics.json` (baseline, phase1, phase2
on the eval split), `training_curves.png`, `train_summary.json`; and under OUT/work (or --work) the state of an
unfinished run: per-phase BackupAndRestore checkpoints, CSV histories and TensorBoard logs. Rerunning the same
command after a crash or a kill resumes from the last finished epoch; a finished run's rerun starts afresh.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import time

import keras
import numpy as np

from pipelines.common import storage
from pipelines.common.command_line import command_parser, parse_command
from pipelines.common.retrieval_metrics import retrieval_metrics
from pipelines.config import Config, ConfigError
from pipelines.contracts import EVAL_METRICS_FILE, STATS_FILE, TRAIN_MODEL_DIR, TRAIN_SUMMARY_FILE, TRAINING_CURVES_FILE
from trainer.backbones import BackboneError
from trainer.data import PosterSplit, TrainingDataError, pixels_dataset, read_genre_vocabulary, read_split
from trainer.distribute import StrategyError, global_batch_size, is_chief, make_strategy
from trainer.export import export_model
from trainer.model import backbone_features_model, build_model, embedding_model
from trainer.phases import resumed_epoch, train_genres, train_metric
from trainer.plots import training_curves_png

STATE_FILE = "state.json"
PHASES = ("phase1", "phase2")
USER_ERRORS = (ConfigError, TrainingDataError, BackboneError, StrategyError, storage.OutputLocationError)


def read_history(work: str, phase: str) -> dict[str, list[float]]:
    """metric → one value per epoch from the phase's CSV log (a resumed epoch's last row wins)."""
    path = storage.join(work, phase, "history.csv")
    if not storage.exists(path):
        return {}
    rows = {}
    for row in csv.DictReader(io.StringIO(storage.read_bytes(path).decode())):
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


def start_or_resume(work: str, fingerprint: str, vocabulary: list[str], fresh: bool) -> dict:
    """The state of an unfinished run with the same settings, or a new one (the work dir cleared).

    An unfinished run with other settings or another genre vocabulary is an error rather than silently lost.
    """
    path = storage.join(work, STATE_FILE)
    state = storage.read_json(path) if storage.exists(path) else None
    if state and not state.get("finished") and not fresh:
        if state["vocabulary"] != vocabulary:
            raise TrainingDataError(
                f"{work} holds an unfinished run trained on another genre vocabulary ({len(state['vocabulary'])} "
                f"genres, now {len(vocabulary)}); pass --fresh to discard it, or use another --out/--work")
        if state["fingerprint"] != fingerprint:
            raise TrainingDataError(f"{work} holds an unfinished run with other model/train settings or data; "
                                    "rerun with the same ones to resume, or pass --fresh to discard it")
        print(f"train: resuming the unfinished run in {work}", flush=True)
        return state
    storage.delete_tree(work)
    state = {"fingerprint": fingerprint, "vocabulary": vocabulary, "finished": False, "metrics": {}, "phases": {}}
    storage.write_json(path, state)
    return state


def _weights_path(work: str, phase: str) -> str:
    return storage.join(work, f"{phase}.weights.h5")


# --- the command ----------------------------------------------------------------------------------------------

def evaluate_embedding(embedder: keras.Model, split: PosterSplit, input_size: int, batch_size: int,
                       genres: list[str]) -> dict:
    """Retrieval metrics of `embedder` on `split`, overall and by genre (direct calls: each cut is a new model,
    predict would retrace)."""
    vectors = [embedder(pixels, training=False).numpy() for pixels in pixels_dataset(split, batch_size, input_size)]
    return retrieval_metrics(np.concatenate(vectors), split.labels, genres=genres)


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
    vocabulary, train, evaluation = _read_data(data_dir, config.model.input_size)
    work = _work_dir(work_dir or storage.join(out_dir, "work"))
    state = start_or_resume(work, run_fingerprint(config, data_dir), vocabulary, fresh)
    print(f"train: {config.model.backbone} at {config.model.input_size}px, {len(vocabulary)} genres, {len(train)} "
          f"train / {len(evaluation)} eval posters, {strategy.num_replicas_in_sync} replica(s)", flush=True)
    with strategy.scope():
        model = build_model(config.model, len(vocabulary))
    _train_phases(model, state, train, evaluation, config, strategy, work, callbacks)
    summary = _summary(config, data_dir, out_dir, work, state, strategy, train, evaluation)
    if is_chief():
        summary["model_version"] = _write_outputs(model, config, data_dir, out_dir, summary)
    _mark_finished(work, state)
    summary["seconds"] = round(time.time() - started, 1)
    if is_chief():
        storage.write_json(storage.join(out_dir, TRAIN_SUMMARY_FILE), summary)
    return summary


def _read_data(data_dir: str, input_size: int) -> tuple[list[str], PosterSplit, PosterSplit]:
    vocabulary = read_genre_vocabulary(data_dir)
    train, evaluation = (read_split(data_dir, split, vocabulary, input_size) for split in ("train", "eval"))
    if len(evaluation) <= 10:
        raise TrainingDataError(f"the eval split has {len(evaluation)} posters; retrieval@10 needs more than 10: "
                                "raise preprocess.eval_fraction or add posters")
    return vocabulary, train, evaluation


def _work_dir(work: str) -> str:
    if is_chief():
        return work
    # Other workers keep their checkpoints apart; only the chief's are read back.
    return storage.join(work, f"worker-{json.loads(os.environ['TF_CONFIG'])['task']['index']}")


def _train_phases(model, state: dict, train: PosterSplit, evaluation: PosterSplit, config: Config, strategy,
                  work: str, callbacks) -> None:
    """Baseline metrics, then each phase not finished yet (a finished one's weights are loaded instead)."""
    size, verbose = config.model.input_size, 1 if sys.stdout.isatty() else 2
    eval_batch = global_batch_size(config.train.per_replica_batch_size, strategy)
    metrics = state["metrics"]
    if "baseline" not in metrics:
        metrics["baseline"] = evaluate_embedding(backbone_features_model(model), evaluation, size, eval_batch,
                                                 state["vocabulary"])
        storage.write_json(storage.join(work, STATE_FILE), state)
    for phase, train_phase in (("phase1", train_genres), ("phase2", train_metric)):
        if phase in state["phases"]:
            model.load_weights(_weights_path(work, phase))
            continue
        phase_started, resumed = time.time(), resumed_epoch(work, phase)
        print(f"\n=== {phase} ===" + (f" (resuming at epoch {resumed + 1})" if resumed else ""), flush=True)
        info = train_phase(model, train, config, strategy, work, callbacks, verbose)
        model.save_weights(_weights_path(work, phase))
        state["phases"][phase] = {**info, "seconds": round(time.time() - phase_started, 1),
                                  "resumed_at_epoch": resumed}
        metrics[phase] = evaluate_embedding(embedding_model(model), evaluation, size, eval_batch, state["vocabulary"])
        storage.write_json(storage.join(work, STATE_FILE), state)


def _summary(config: Config, data_dir, out_dir, work, state, strategy, train, evaluation) -> dict:
    histories = {phase: read_history(work, phase) for phase in PHASES}
    outputs = (TRAIN_MODEL_DIR, EVAL_METRICS_FILE, TRAINING_CURVES_FILE, TRAIN_SUMMARY_FILE)
    return {
        "backbone": config.model.backbone, "input_size": config.model.input_size,
        "embedding_dim": config.model.embedding_dim, "genres": state["vocabulary"],
        "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
        "train_examples": len(train), "eval_examples": len(evaluation), "data": data_dir,
        "phases": {phase: {**state["phases"][phase], "history": histories[phase]} for phase in PHASES},
        "eval_metrics": {name: state["metrics"][name] for name in ("baseline", *PHASES)},
        "outputs": {name: storage.join(out_dir, name) for name in outputs} | {"work": work},
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


def _mark_finished(work: str, state: dict) -> None:
    state["finished"] = True
    storage.write_json(storage.join(work, STATE_FILE), state)
    for phase in PHASES:  # only a resume needs them; the export holds the trained model
        storage.delete_tree(_weights_path(work, phase))


def summary_text(summary: dict) -> str:
    lines = [f"train: {summary['backbone']} → {summary['outputs'][TRAIN_MODEL_DIR]} (model_version "
             f"{summary.get('model_version')}) in {summary['seconds']} s on {summary['replicas']} replica(s)",
             "eval split retrieval, cosine:  precision@10  map@10"]
    for name, values in summary["eval_metrics"].items():
        lines.append(f"  {name:<9} {values['precision_at_10']:>22.3f}  {values['map_at_10']:.3f}")
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
