"""Training that cannot fail silently: a schedule that selects nothing, a collapsed embedding and a phase 2 that is
worse than phase 1 or a colour histogram each end `posters train` with exit status 1 and one line saying why,
and export no model; early stopping exports the best epoch's weights.

Collapse is reproduced with constant inputs (every poster the same: any embedding of them is one vector), the
regression with scrambled train genres (phase 2 memorises groupings the eval split does not have); both on the tiny
backbone, the sizes of tests/trainer/fixtures.py.
"""
import contextlib
import io
import json
import os

import pytest

from tests.trainer.fixtures import write_preprocess_output, write_tiny_config
from trainer import train
from trainer.evaluation import no_regression_gate
from trainer.work_dir import WorkDir

PATIENCE, METRIC_EPOCHS = 1, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_preprocess_output(str(tmp_path_factory.mktemp("preprocessed")))


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """Scrambled train genres, the gate on, a high phase-2 learning rate, early stopping after one worse epoch."""
    root = tmp_path_factory.mktemp("overfit")
    data = write_preprocess_output(str(root / "data"), scramble_train=True)
    config = write_tiny_config(str(root / "overfit.yaml"), "train.regression_margin=0.0",
                               f"train.early_stopping_patience={PATIENCE}", f"train.metric_epochs={METRIC_EPOCHS}",
                               "train.metric_learning_rate=0.01")
    return _train(config, data, str(root / "out"))


def _train(config: str, data: str, out: str, *flags: str) -> dict:
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        code = train.main(["--config", config, "--data", data, "--out", out, *flags])
    metrics_file = os.path.join(out, "eval_metrics.json")
    metrics = json.load(open(metrics_file)) if os.path.exists(metrics_file) else None
    return {"code": code, "stdout": printed.getvalue(), "stderr": errors.getvalue(), "out": out, "metrics": metrics}


def test_a_schedule_pattern_that_selects_no_layer_is_refused_before_any_work(data, tmp_path):
    config = write_tiny_config(str(tmp_path / "c.yaml"), 'train.unfreeze_schedule=[["block_3"], ["blok_2"]]')
    run = _train(config, data, str(tmp_path / "out"))
    assert run["code"] == 1
    assert run["stderr"] == ("posters train: train.unfreeze_schedule: 'blok_2' matches no layer of tiny_cnn; its "
                             "blocks are block_1, block_2, block_3 (a pattern selects the layers whose names start or "
                             "end with it)\n")
    assert not os.path.exists(tmp_path / "out")  # refused before the work directory was made


def test_constant_posters_collapse_and_the_run_fails_exporting_nothing(tmp_path):
    data = write_preprocess_output(str(tmp_path / "data"), one_poster=True)
    config = write_tiny_config(str(tmp_path / "c.yaml"), "train.warmup_epochs=1")
    run = _train(config, data, str(tmp_path / "out"))
    assert run["code"] == 1
    assert run["stderr"].startswith("posters train: phase1 collapsed: the eval embeddings are degenerate (spread ")
    assert "nothing was exported" in run["stderr"] and run["stderr"].count("\n") == 1
    assert not os.path.exists(tmp_path / "out" / "model")
    collapse = run["metrics"]["phase1"]["collapse"]
    assert collapse["spread"] < 0.01 and collapse["tied_share"] == 1.0 and "phase2" not in run["metrics"]


def test_an_overfitting_phase_2_trips_the_gate_and_exports_nothing(overfit):
    assert overfit["code"] == 1, overfit["stdout"][-2000:] + overfit["stderr"]
    gate = overfit["metrics"]["gate"]
    assert gate["checked"] and not gate["passed"]
    # What the gate saw is what eval_metrics.json holds; it names each embedding phase 2 fell below (margin 0).
    assert gate["phase2"] == overfit["metrics"]["phase2"]["precision_at_10"]
    assert gate["against"] == {name: overfit["metrics"][name]["precision_at_10"] for name in ("phase1",
                                                                                              "colour_histogram")}
    assert gate["below"] == [name for name, value in gate["against"].items() if gate["phase2"] < value] != []
    assert overfit["stderr"].startswith(f"posters train: no-regression gate: phase 2 scores precision_at_10 "
                                        f"{gate['phase2']:.3f} on the eval split, below ")
    assert not os.path.exists(os.path.join(overfit["out"], "model"))


def test_early_stopping_gates_the_best_epoch_and_stops_after_patience_worse_ones(overfit):
    scores = train.read_history(WorkDir(os.path.join(overfit["out"], "work")), "phase2")["eval_precision_at_10"]
    best = max(range(len(scores)), key=lambda epoch: (scores[epoch], -epoch))  # ties: the earlier epoch
    assert len(scores) == min(best + 1 + PATIENCE, METRIC_EPOCHS), scores
    # The weights phase 2 ends with, scored once more after training, are the best epoch's.
    assert overfit["metrics"]["phase2"]["precision_at_10"] == round(scores[best], 4)


def test_the_gate_compares_with_phase_1_and_the_reference_within_the_margin():
    metrics = {"phase1": {"precision_at_10": 0.557}, "colour_histogram": {"precision_at_10": 0.549},
               "phase2": {"precision_at_10": 0.544}}  # the held-out figures
    assert no_regression_gate(metrics, 0.0)["below"] == ["phase1", "colour_histogram"]
    assert no_regression_gate(metrics, 0.01)["below"] == ["phase1"]
    assert no_regression_gate(metrics, 0.02)["passed"]
    off = no_regression_gate(metrics, None)
    assert (off["checked"], off["passed"], off["below"]) == (False, True, [])


def test_a_mobilenet_from_random_weights_trains_or_fails_with_the_collapse_message_never_exporting_a_collapse(data,
                                                                                                            tmp_path):
    """The issue's case: mobilenet_v3_small with `weights: none` (BatchNorm then trains: `freeze_batchnorm: auto`).
    Either the run passes its collapse checks and exports a model whose eval embeddings are not degenerate, or it
    exits 1 with the collapse line and exports nothing — never exit 0 with a collapsed embedding."""
    config = write_tiny_config(str(tmp_path / "c.yaml"), "model.backbone=mobilenet_v3_small",
                               'train.unfreeze_schedule=[["expanded_conv_10"], ["expanded_conv_9"]]',
                               "train.warmup_epochs=1", "train.metric_epochs=1")
    run = _train(config, data, str(tmp_path / "out"))
    phases = [name for name in ("phase1", "phase2") if name in (run["metrics"] or {})]
    assert phases, run["stderr"]
    if run["code"] == 0:
        assert os.path.exists(tmp_path / "out" / "model" / "saved_model.pb")
        for name in phases:
            collapse = run["metrics"][name]["collapse"]
            assert collapse["spread"] >= 0.01 and collapse["tied_share"] <= 0.5, (name, collapse)
    else:
        assert run["code"] == 1 and " collapsed: the eval embeddings are degenerate" in run["stderr"], run["stderr"]
        assert not os.path.exists(tmp_path / "out" / "model")
