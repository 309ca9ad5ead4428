"""Two local workers under MultiWorkerMirroredStrategy train like one worker at the same global batch.

Both workers run the real command, `posters train` (`pipelines.cli.main`, each in a child that one process forks
once it has imported TensorFlow: this module run as a script), with TF_CONFIG naming two localhost ports; the train
split has two shards and `train.input_pipelines=2`, so each worker streams one shard (file sharding) and contributes
half of every global batch. One worker with the same two input pipelines, at the same global batch, run beside them
(the same command, `train.main`, in the test's own process: it has imported TensorFlow already), is the reference:
same losses in both phases, the same exported model. Only the chief writes outputs and the work directory.

The reference runs under MirroredStrategy on its one CPU, not the default strategy: under any tf.distribute strategy
Keras 3.15's `fit` draws one batch to build the model symbolically (`_maybe_symbolic_build`) and does not train on it,
so a strategy-less run would train on one batch more at the start of every phase.
"""
import contextlib
import io
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # disable_op_determinism: not exported

from pipelines.common.exported_model import load_exported_model
from tests.trainer.fixtures import poster_split, write_preprocess_output, write_tiny_config
from trainer import train

SUBPROCESS_TIMEOUT_S = 600  # generous: only a hang gets there, and it must not stall CI
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Global batch 16 in both phases (phase 1: 8 per worker; phase 2: P×K = 4×4, 2 genres × 4 per input pipeline); a
# wide margin keeps phase 2's loss, and so its gradients, away from zero on these easy posters. BatchNormalization
# frozen: a training BN layer normalises each replica's share of the batch (Keras' default, not synchronised), so
# two workers' halves would see other statistics than one worker's whole batch.
SHARED = ["--set", "train.steps_per_epoch=3", "--set", "train.input_pipelines=2", "--set", "train.triplet_margin=1.0",
          "--set", "model.freeze_batchnorm=true"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_worker")
    data = write_preprocess_output(str(root / "data"), shards=2)
    config = write_tiny_config(str(root / "tiny.yaml"))
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    train_args = ["--config", config, "--data", data, *SHARED]
    two_workers = ["train", *train_args, "--out", str(root / "two_workers"), "--set", "train.strategy=multi_worker",
                   "--set", "train.per_replica_batch_size=8"]
    one_worker = [*train_args, "--out", str(root / "one_worker"), "--set", "train.strategy=mirrored",
                  "--set", "train.per_replica_batch_size=16"]
    # Deterministic kernels: phase 2's semi-hard mining would turn a reduction-order difference into a visible one.
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_DETERMINISTIC_OPS": "1"}
    logs = [str(root / f"worker-{index}.log") for index in range(2)]
    # One process imports TensorFlow and forks the two workers (`_fork_workers`); to files: a full pipe would stall
    # a worker while the reference trains.
    with open(root / "workers.log", "w") as handle:
        workers = subprocess.Popen([sys.executable, "-m", "tests.trainer.test_multi_worker", json.dumps(cluster),
                                    *logs, "--", *two_workers], cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                   env=env)
    try:
        # The reference trains here meanwhile (this process has imported TensorFlow already), deterministic too.
        tf.config.experimental.enable_op_determinism()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                assert train.main(one_worker) == 0
        finally:
            tf_config.disable_op_determinism()
        workers.wait(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        workers.kill()
    outputs = []
    for log in logs:
        with open(log) as handle:
            outputs.append(handle.read())
    with open(root / "workers.log") as handle:
        codes = json.loads(handle.read().strip().splitlines()[-1])
    assert workers.returncode == 0 and codes == [0, 0], (codes, outputs[0][-3000:], outputs[1][-3000:])
    return {"two": str(root / "two_workers"), "one": str(root / "one_worker"), "outputs": outputs}


def _summary(out: str) -> dict:
    with open(os.path.join(out, "train_summary.json")) as handle:
        return json.load(handle)


def test_two_workers_train_with_the_losses_of_one_at_the_same_global_batch(runs):
    two, one = _summary(runs["two"]), _summary(runs["one"])
    assert (two["strategy"], two["replicas"]) == ("KerasMultiWorkerMirroredStrategy", 2)
    assert (one["strategy"], one["replicas"]) == ("MirroredStrategy", 1)
    for phase in ("phase1", "phase2"):
        assert two["phases"][phase]["global_batch"] == one["phases"][phase]["global_batch"] == 16
        assert len(one["phases"][phase]["history"]["loss"]) == 2
        np.testing.assert_allclose(two["phases"][phase]["history"]["loss"], one["phases"][phase]["history"]["loss"],
                                   rtol=1e-4)
    assert min(one["phases"]["phase2"]["history"]["loss"]) > 0.1  # phase 2 moved the weights: something compared


def test_two_workers_export_the_model_one_worker_exports(runs):
    posters = list(poster_split(16, seed=5).images)
    two, _ = load_exported_model(os.path.join(runs["two"], "model"))
    one, _ = load_exported_model(os.path.join(runs["one"], "model"))
    np.testing.assert_allclose(two(posters), one(posters), atol=1e-4)


def test_only_the_chief_writes_outputs_and_the_work_directory(runs):
    assert sorted(os.listdir(runs["two"])) == sorted(os.listdir(runs["one"]))
    work_entries = [sorted(os.listdir(os.path.join(runs[run], "work"))) for run in ("two", "one")]
    assert work_entries[0] == work_entries[1]
    assert "train:" in runs["outputs"][0] and "precision@10" not in runs["outputs"][1]  # the summary is the chief's


# --- the workers' process -------------------------------------------------------------------------------------

def _fork_workers(cluster: dict, logs: list[str], argv: list[str]) -> list[int]:
    """Worker i of `cluster` runs `posters <argv>` (`pipelines.cli.main`) in a child forked from this process, its
    output to `logs[i]`; returns their exit statuses. The imports are paid once, before the fork; nothing has run
    in TensorFlow yet, so each child starts its own runtime (and its own gRPC server)."""
    import trainer.train  # noqa: F401 - what the command imports, imported once for both children

    pids = []
    for index, log in enumerate(logs):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(descriptor, 1)
                os.dup2(descriptor, 2)
                os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
                from pipelines import cli

                code = cli.main(argv)
            except BaseException:  # noqa: BLE001 - a forked child reports anything and exits, never returns here
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


if __name__ == "__main__":
    separator = sys.argv.index("--")
    print(json.dumps(_fork_workers(json.loads(sys.argv[1]), sys.argv[2:separator], sys.argv[separator + 1:])))
