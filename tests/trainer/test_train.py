"""`posters train` on a tiny preprocess output: outputs, resume after a kill, unfreezing, and the user's errors.

Run as a module (`python -m tests.trainer.test_train kill DATA CONFIG OUT,WORK…`) it is the process the kill test
starts: it forks one training per OUT (and --work WORK, where not empty), each killed mid-epoch, and prints their
exit statuses.
"""
import contextlib
import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from pipelines.common.exported_model import load_exported_model
from tests.trainer.fixtures import poster_split, write_preprocess_output, write_tiny_config
from trainer import train
from trainer.work_dir import WorkDir, WorkDirError

KILL_EXIT_CODE = 17
RESUME_TOLERANCE = 1e-4  # on unit-norm embeddings
SUBPROCESS_TIMEOUT_S = 600  # generous: only a hang gets there, and it must not stall CI
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class KillMidEpoch(keras.callbacks.Callback):
    """Ends the process abruptly (no cleanup, no finally blocks) at phase 1, epoch 2, after batch 3."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.model.name.startswith("poster_") and self.epoch == 1 and batch == 2:
            os._exit(KILL_EXIT_CODE)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_preprocess_output(str(tmp_path_factory.mktemp("preprocessed")))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return write_tiny_config(str(tmp_path_factory.mktemp("config") / "tiny.yaml"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data, config_file):
    """One uninterrupted `posters train` run: (out dir, its printed output)."""
    out = str(tmp_path_factory.mktemp("train") / "out")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert train.main(["--config", config_file, "--data", data, "--out", out]) == 0
    return out, printed.getvalue()


def _read_json(path):
    with open(path) as handle:
        return json.load(handle)


def test_train_writes_model_metrics_curves_and_summary(finished):
    out, stdout = finished
    embed, meta = load_exported_model(os.path.join(out, "model"))
    assert (meta["backbone"], meta["dim"], meta["genres"]) == ("tiny_cnn", 16, ["Action", "Comedy", "Drama", "Horror"])
    metrics = _read_json(os.path.join(out, "eval_metrics.json"))
    assert set(metrics) == {"baseline", "colour_histogram", "phase1", "phase2", "gate"}
    for name in ("baseline", "colour_histogram", "phase1", "phase2"):
        assert 0.0 <= metrics[name]["map_at_10"] <= 1.0 and 0.0 <= metrics[name]["precision_at_10"] <= 1.0
    assert metrics["gate"]["checked"] is False  # switched off in the tiny configuration (fixtures.TINY_TRAINING)
    with open(os.path.join(out, "training_curves.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = _read_json(os.path.join(out, "train_summary.json"))
    assert summary["model_version"] == meta["model_version"]
    assert [len(summary["phases"][p]["history"]["loss"]) for p in ("phase1", "phase2")] == [2, 2]
    # Phase 2 exports its best epoch on the eval split (train.early_stopping_patience): the export scores its score.
    phase2 = summary["phases"]["phase2"]
    assert phase2["best_epoch"] in (1, 2)
    assert metrics["phase2"]["precision_at_10"] == round(phase2["best_eval_precision_at_10"], 4)
    assert all(metrics[name]["collapse"]["tied_share"] == 0.0 for name in ("phase1", "phase2"))
    # From random weights BatchNormalization trains with its block (model.freeze_batchnorm: auto): conv + BN per block.
    assert summary["phases"]["phase1"]["trainable_backbone_layers"] == {"1": 2, "2": 4}
    assert sorted(os.listdir(os.path.join(out, "work", "logs"))) == ["phase1", "phase2"]
    tensorboard_files = os.listdir(os.path.join(out, "work", "logs", "phase1"))
    assert any(name.startswith("events.out.tfevents") for name in tensorboard_files)
    assert "precision@10" in stdout and meta["model_version"] in stdout


def _killed_runs(data: str, config_file: str, runs: list[tuple[str, str]]) -> None:
    """Each (OUT, WORK) of `runs` trained until `KillMidEpoch` ends the process (WORK "": OUT/work); one process
    imports TensorFlow and forks them."""
    killed = subprocess.run([sys.executable, "-m", "tests.trainer.test_train", "kill", data, config_file,
                             *(f"{out},{work}" for out, work in runs)],
                            cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert json.loads(killed.stdout.strip().splitlines()[-1]) == [KILL_EXIT_CODE] * len(runs), killed.stderr[-3000:]


def test_killed_mid_epoch_resumes_from_the_checkpoint_to_the_same_model_with_a_local_or_a_gcs_work_dir(
        finished, data, config_file, tmp_path, gcs_emulator):
    """Killed at phase 1's epoch 2 with a local --work (OUT on gs://: the outputs go there from a local work
    directory), and with OUT, and so OUT/work, on gs:// (the checkpoints are mirrored there after every epoch), the
    rerun of the same command resumes from epoch 2 to the model of the uninterrupted run."""
    from pipelines.common import storage

    local_work, remote = str(tmp_path / "work"), gcs_emulator.uri("run")
    runs = [(gcs_emulator.uri("training"), local_work), (remote, "")]
    _killed_runs(data, config_file, runs)
    assert _read_json(os.path.join(local_work, "phase1", "backup", "training_metadata.json"))["epoch"] == 1
    work = storage.join(remote, "work")
    assert storage.read_json(storage.join(work, "phase1", "backup", "training_metadata.json"))["epoch"] == 1
    assert storage.exists(storage.join(work, "_POSTERS_TRAIN_WORK"))
    for out, _ in runs:
        assert not storage.exists(storage.join(out, "model", "_SUCCESS"))

    # The resumed run sees the batches the uninterrupted run saw, from the checkpointed weights and optimizer, so
    # it ends with the same model: the same vectors up to float reordering (op determinism is not enabled). A
    # resume that replays epoch 1's batches instead of skipping them moves them by 0.05 (measured), 500× this.
    posters = list(poster_split(16, seed=5).images)
    uninterrupted, _ = load_exported_model(os.path.join(finished[0], "model"))
    for out, work_flag in runs:
        assert train.main(["--config", config_file, "--data", data, "--out", out,
                           *(["--work", work_flag] if work_flag else [])]) == 0
        summary = storage.read_json(storage.join(out, "train_summary.json"))
        assert summary["phases"]["phase1"]["resumed_at_epoch"] == 1
        assert len(summary["phases"]["phase1"]["history"]["loss"]) == 2  # epoch 1 from the first run, 2 from this
        resumed, _ = load_exported_model(storage.join(out, "model"))
        np.testing.assert_allclose(resumed(posters), uninterrupted(posters), atol=RESUME_TOLERANCE)
        # Every output is on gs://, from either work directory.
        assert {"baseline", "phase1", "phase2"} <= set(storage.read_json(storage.join(out, "eval_metrics.json")))
        assert storage.exists(storage.join(out, "training_curves.png"))
    assert storage.read_json(storage.join(work, "state.json"))["finished"] is True
    assert _read_json(os.path.join(local_work, "state.json"))["finished"] is True
    # BackupAndRestore removed its backup at the end, and the mirror removed it on gs:// too; the logs stay.
    assert not storage.exists(storage.join(work, "phase1", "backup", "training_metadata.json"))
    assert storage.list_files(storage.join(work, "logs"))


def test_a_finished_run_leaves_nothing_to_resume(finished):
    state = _read_json(os.path.join(finished[0], "work", "state.json"))
    assert state["finished"] is True
    assert not os.path.exists(os.path.join(finished[0], "work", "phase1", "backup"))


def test_empty_train_split_is_a_clear_error(tmp_path, config_file, capsys):
    data = write_preprocess_output(str(tmp_path / "data"), n_train=0)
    assert train.main(["--config", config_file, "--data", data, "--out", str(tmp_path / "out")]) == 1
    assert "the train split is empty" in capsys.readouterr().err


def test_labels_that_do_not_match_the_vocabulary_are_a_clear_error(tmp_path, config_file, capsys):
    data = write_preprocess_output(str(tmp_path / "data"), label_width=5)
    assert train.main(["--config", config_file, "--data", data, "--out", str(tmp_path / "out")]) == 1
    assert "labels have shape [5] but the genre vocabulary has 4 genres" in capsys.readouterr().err


def test_an_unfinished_run_on_another_vocabulary_is_not_resumed(tmp_path, data, config_file, capsys):
    out = tmp_path / "out"
    train.start_or_resume(WorkDir(str(out / "work")), "earlier-run", ["Western", "Musical"], fresh=False)
    assert train.main(["--config", config_file, "--data", data, "--out", str(out)]) == 1
    assert "another genre vocabulary (2 genres, now 4)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--config", "missing.yaml"], "config file not found: missing.yaml"),
    (["--set", "train.bogus=1"], "unknown key train.bogus"),
])
def test_a_bad_config_is_a_one_line_error(tmp_path, config_file, capsys, flags, message):
    args = ["--config", config_file, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *flags]
    assert train.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("posters train: ") and message in err and len(err.strip().splitlines()) == 1


def test_incomplete_preprocess_output_is_refused(tmp_path, config_file, capsys):
    data = write_preprocess_output(str(tmp_path / "data"))
    os.remove(os.path.join(data, "_SUCCESS"))
    assert train.main(["--config", config_file, "--data", data, "--out", str(tmp_path / "out")]) == 1
    assert "not a complete preprocess output" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["", "model", "../"])
def test_an_out_that_is_inside_or_holds_the_data_is_refused(tmp_path, data, config_file, capsys, out):
    """`--out` (and `--work`, which a fresh run clears) may not overlap `--data`."""
    target = os.path.normpath(os.path.join(data, out)) if out else data
    before = sorted(os.listdir(data))
    assert train.main(["--config", config_file, "--data", data, "--out", target]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"posters train: --out {target} ") and f"the input --data {data}" in err
    assert sorted(os.listdir(data)) == before
    assert train.main(["--config", config_file, "--data", data, "--out", str(tmp_path / "out"),
                       "--work", data]) == 1
    assert f"posters train: --work {data} is the input --data {data}" in capsys.readouterr().err
    assert sorted(os.listdir(data)) == before


def test_a_non_empty_work_dir_the_trainer_did_not_make_is_refused(tmp_path, data, config_file, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert train.main(["--config", config_file, "--data", data, "--out", str(tmp_path / "out"), "--work", "."]) == 1
    err = capsys.readouterr().err
    assert err.startswith("posters train: ") and len(err.strip().splitlines()) == 1
    assert "is not empty and was not made by posters train" in err and "notes.txt" in err
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def _tree(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(folder, name), root) for folder, _, names in os.walk(root)
                  for name in names)


def test_a_fresh_start_deletes_only_what_the_trainer_writes(tmp_path):
    work = WorkDir(str(tmp_path / "work"))
    work.claim()
    owned = ["state.json", "phase1/backup/latest.weights.h5", "phase2/history.csv", "logs/phase1/events",
             "cache/train-0/genre-0000.tfrecord", "phase1.weights.h5"]
    theirs = ["notes.txt", "worker-1/state.json", "phase1-notes/a.txt"]  # a user's, another worker's, a look-alike
    for name in owned + theirs:
        os.makedirs(os.path.dirname(work.path(name)), exist_ok=True)
        with open(work.path(name), "w") as handle:
            handle.write("x")
    train.start_or_resume(work, "a-fingerprint", ["Action"], fresh=True)
    assert _tree(work.local) == sorted(["_POSTERS_TRAIN_WORK", "state.json", *theirs])


def test_a_gcs_work_dir_is_claimed_and_cleared_like_a_local_one(gcs_emulator):
    from pipelines.common import storage

    foreign = WorkDir(gcs_emulator.uri("someone-else"))
    storage.write_bytes(gcs_emulator.uri("someone-else/data.csv"), b"x")
    with pytest.raises(WorkDirError, match="not made by posters train"):
        foreign.claim()
    work = WorkDir(gcs_emulator.uri("work"))
    work.claim()
    for name in ("phase1/backup/latest.weights.h5", "state.json", "notes.txt"):
        storage.write_bytes(storage.join(work.uri, name), b"x")
    work.restore()
    assert _tree(work.local) == ["phase1/backup/latest.weights.h5", "state.json"]  # owned names only
    work.clear()
    assert storage.list_files(work.uri) == [gcs_emulator.uri(f"work/{name}") for name in ("_POSTERS_TRAIN_WORK",
                                                                                           "notes.txt")]
    work.close()
    assert not os.path.exists(work.local)


def _train_until_killed(data: str, out: str, work: str, config_file: str) -> None:
    from pipelines.config import load_config

    if os.environ.get("STORAGE_EMULATOR_HOST"):  # the gs:// run: anonymous credentials, as tests/conftest.py does
        from apache_beam.internal.gcp import auth

        auth._Credentials._credentials_init, auth._Credentials._credentials = True, None
    train.run(load_config(config_file), data, out, work_dir=work or None, callbacks=[KillMidEpoch()])
    sys.exit("the training was expected to be killed")


def _fork_killed_runs(data: str, config_file: str, runs: list[str]) -> list[int]:
    """The exit status of each run ("OUT,WORK"; WORK empty: OUT/work), trained one after another in a child forked
    from this process: the imports are paid once, and no TensorFlow runtime exists yet when it forks (nothing has run
    here)."""
    codes = []
    for out, work in (run.rsplit(",", 1) for run in runs):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _train_until_killed(data, out, work, config_file)
            except SystemExit as exit_:
                print(exit_, file=sys.stderr, flush=True)
            except BaseException:  # noqa: BLE001 - a forked child reports anything and exits, never returns here
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    return codes


if __name__ == "__main__":
    assert sys.argv[1] == "kill"
    print(json.dumps(_fork_killed_runs(sys.argv[2], sys.argv[3], sys.argv[4:])))
