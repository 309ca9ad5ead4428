"""tf.distribute: the strategy from the config, 2 replicas ≡ 1 replica at the same global batch, global mining, the
triplet loss class's own replica scaling under Keras' `fit`; and two local workers under MultiWorkerMirroredStrategy
that train like one worker at the same global batch.

Two replicas on a CPU need `tf.config.set_logical_device_configuration` before TensorFlow initialises its
devices, and each worker needs a TensorFlow runtime (and gRPC server) of its own: both run in one fresh process,
this module run as `python -m tests.trainer.test_distribute`. It imports TensorFlow once, forks the two workers
while no TensorFlow runtime exists yet (`_fork_workers`), then splits its CPU into two logical devices and measures
the replicas while they train (`_measure`); it prints its measurements and the workers' exit statuses as JSON for
the tests to check. One TensorFlow start-up serves both (two processes paid it twice, ~7 CPU s each).

The workers run the real command, `posters train` (`pipelines.cli.main`), with TF_CONFIG naming two localhost
ports; the train split has two shards and `train.input_pipelines=2`, so each worker streams one shard (file
sharding) and contributes half of every global batch. One worker with the same two input pipelines, at the same
global batch, run beside them (the same command, `train.main`, in the test's own process: it has imported
TensorFlow already), is the reference: same losses in both phases, the same exported model. Only the chief writes
outputs and the work directory.

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
import tempfile
import warnings

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
MULTI_WORKER = ["--set", "train.steps_per_epoch=3", "--set", "train.input_pipelines=2",
                "--set", "train.triplet_margin=1.0", "--set", "model.freeze_batchnorm=true"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _measured() -> dict:
    """The replica measurements alone, in a fresh process (no workers)."""
    completed = subprocess.run([sys.executable, "-m", "tests.trainer.test_distribute"], cwd=REPO,
                               capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])["measured"]


def _same_losses(results: dict) -> bool:
    two, one = results["two_replicas"], results["one_replica"]
    return all(np.allclose(two[key], one[key], rtol=1e-4) for key in ("phase1_loss", "phase2_loss"))


@pytest.fixture(scope="module")
def measuring_process(tmp_path_factory):
    """The measuring process (replicas measured, two workers trained) and the one-worker reference trained here
    meanwhile: {"measured": …, "two": out dir, "one": out dir, "outputs": the workers' logs}."""
    root = tmp_path_factory.mktemp("multi_worker")
    data = write_preprocess_output(str(root / "data"), shards=2)
    config = write_tiny_config(str(root / "tiny.yaml"))
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    train_args = ["--config", config, "--data", data, *MULTI_WORKER]
    two_workers = ["train", *train_args, "--out", str(root / "two_workers"), "--set", "train.strategy=multi_worker",
                   "--set", "train.per_replica_batch_size=8"]
    one_worker = [*train_args, "--out", str(root / "one_worker"), "--set", "train.strategy=mirrored",
                  "--set", "train.per_replica_batch_size=16"]
    # Deterministic kernels: phase 2's semi-hard mining would turn a reduction-order difference into a visible one.
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_DETERMINISTIC_OPS": "1"}
    logs = [str(root / f"worker-{index}.log") for index in range(2)]
    # To files: a full pipe would stall the process while the reference trains.
    with open(root / "measured.json", "w") as out, open(root / "measuring.log", "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "tests.trainer.test_distribute", json.dumps(cluster), *logs,
                                    "--", *two_workers], cwd=REPO, stdout=out, stderr=err, env=env)
    try:
        # The reference trains here meanwhile (this process has imported TensorFlow already), deterministic too.
        tf.config.experimental.enable_op_determinism()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                assert train.main(one_worker) == 0
        finally:
            tf_config.disable_op_determinism()
        process.wait(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        process.kill()
    outputs = []
    for log in logs:
        with open(log) as handle:
            outputs.append(handle.read())
    errors = (root / "measuring.log").read_text()[-3000:]
    assert process.returncode == 0, errors
    printed = json.loads((root / "measured.json").read_text().strip().splitlines()[-1])
    assert printed["workers"] == [0, 0], (printed["workers"], outputs[0][-3000:], outputs[1][-3000:])
    return {"measured": printed["measured"], "two": str(root / "two_workers"), "one": str(root / "one_worker"),
            "outputs": outputs}


@pytest.fixture(scope="module")
def two_cpu_replicas(measuring_process):
    # Known flake, not understood yet: inside the full suite on a loaded 2-core machine the one-replica run's phase 2
    # came out ~1e-2 off the two-replica run's once in a few suites (never alone, nor under a CPU-bound load, where
    # every run gives identical losses). One fresh process is measured again before the tests below compare them.
    results = measuring_process["measured"]
    if not _same_losses(results):
        warnings.warn(f"tf.distribute measurement differed between its runs ({results['two_replicas']['phase2_loss']}"
                      f" vs {results['one_replica']['phase2_loss']}); measured once more", stacklevel=2)
        results = _measured()
    return results


@pytest.fixture(scope="module")
def runs(measuring_process):
    return measuring_process


def test_mirrored_uses_every_logical_cpu_when_there_is_no_gpu(two_cpu_replicas):
    assert two_cpu_replicas["replicas"] == {"mirrored": 2, "auto": 1, "default": 1}


def test_two_replicas_train_like_one_at_the_same_global_batch(two_cpu_replicas):
    two, one = two_cpu_replicas["two_replicas"], two_cpu_replicas["one_replica"]
    assert two["global_batch"] == one["global_batch"] == {"phase1": 16, "phase2": 16}
    np.testing.assert_allclose(two["phase1_loss"], one["phase1_loss"], rtol=1e-4)
    assert min(one["phase2_loss"]) > 0.1  # else phase 2 would not move the weights: nothing compared
    np.testing.assert_allclose(two["phase2_loss"], one["phase2_loss"], rtol=1e-4)
    assert np.abs(np.array(one["final_embedding_kernel"]) - np.array(one["initial_embedding_kernel"])).max() > 1e-3
    np.testing.assert_allclose(two["final_embedding_kernel"], one["final_embedding_kernel"], rtol=1e-4, atol=1e-5)


def test_semi_hard_negatives_are_mined_over_the_global_batch(two_cpu_replicas):
    mining = two_cpu_replicas["mining"]
    # The batch is built so that mining each replica's half alone gives another loss (else the test is moot).
    assert abs(mining["per_replica_mean"] - mining["global"]) > 0.05
    np.testing.assert_allclose(mining["two_replicas"]["loss"], mining["global"], rtol=1e-5)
    np.testing.assert_allclose(mining["one_replica"]["loss"], mining["global"], rtol=1e-5)


def test_a_global_batch_step_updates_the_weights_as_one_device_would(two_cpu_replicas):
    two, one = two_cpu_replicas["mining"]["two_replicas"], two_cpu_replicas["mining"]["one_replica"]
    assert np.abs(np.array(one["kernel"]) - np.eye(2)).max() > 1e-3  # the step did move the weights
    np.testing.assert_allclose(two["kernel"], one["kernel"], atol=1e-6)


def test_fit_on_two_replicas_averages_like_one(two_cpu_replicas):
    """Each of 2 replicas gets the same 4 posters: expected = the loss and SGD step of 1 replica on them.

    Keras 3 scales non-scalar losses by 1/replicas but not scalars; without the class's own scaling
    (`trainer.losses.TripletSemiHardLoss`) both the reported loss and the step come out doubled.
    """
    one, two = two_cpu_replicas["loss_scaling"]["one_replica"], two_cpu_replicas["loss_scaling"]["two_replicas"]
    assert np.abs(np.array(one["step"])).sum() > 0
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6)
    np.testing.assert_allclose(two["step"], one["step"], rtol=1e-5, atol=1e-7)


def test_multi_worker_without_a_cluster_is_a_clear_error(monkeypatch):
    from trainer.distribute import StrategyError, make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="needs TF_CONFIG"):
        make_strategy("multi_worker")


def test_only_the_chief_writes(monkeypatch):
    from trainer.distribute import is_chief

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief()
    cluster = {"worker": ["a:1", "b:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert is_chief()


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


# --- the measuring process (which forks the two workers first) -------------------------------------------

def _train_tiny(strategy, per_replica_batch: int) -> dict:
    """Phase 1 then phase 2 (2 epochs each) of the tiny model at a global batch of 16, from the same start."""
    import keras

    from tests.trainer.fixtures import GENRES, tiny_config, write_preprocess_output
    from trainer import streaming
    from trainer.model import build_model
    from trainer.phases import train_genres, train_metric
    from trainer.train import read_history
    from trainer.work_dir import WorkDir

    # A wide margin keeps the triplet loss (and so phase 2's gradients) away from zero on these easy posters.
    # BatchNorm frozen: a training BatchNorm normalises each replica's half of the batch by its own statistics,
    # which is not what one replica computes on the whole batch (tf.distribute's SyncBatchNormalization would be).
    config = tiny_config(f"train.per_replica_batch_size={per_replica_batch}", "train.steps_per_epoch=3",
                         "train.triplet_margin=1.0", "model.freeze_batchnorm=true")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(config.model, num_genres=4)
    initial_kernel = model.get_layer("embedding").kernel.numpy().tolist()
    with tempfile.TemporaryDirectory() as scratch:
        data = write_preprocess_output(os.path.join(scratch, "data"))
        split = streaming.open_train(data, list(GENRES), 32, None, strategy, os.path.join(scratch, "cache"))
        work = WorkDir(os.path.join(scratch, "work"))
        phase1 = train_genres(model, split, config, strategy, work, verbose=0)
        phase2 = train_metric(model, split, config, strategy, work, verbose=0)
        histories = {phase: read_history(work, phase)["loss"] for phase in ("phase1", "phase2")}
    return {"global_batch": {"phase1": phase1["global_batch"], "phase2": phase2["global_batch"]},
            "phase1_loss": histories["phase1"], "phase2_loss": histories["phase2"],
            "initial_embedding_kernel": initial_kernel,
            "final_embedding_kernel": model.get_layer("embedding").kernel.numpy().tolist()}


def _mining_batch():
    """8 embeddings of 2 classes; replica 0 gets rows 0-3, replica 1 rows 4-7 (how a global batch is split).

    Each half is well separated by class, but the other half holds closer negatives: mined per replica the
    loss is near zero, mined over the global batch it is not.
    """
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)
    degrees = np.array([0, 10, 90, 100, 60, 70, 40, 50], np.float32)
    radians = np.radians(degrees)
    return labels, np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def _mining_step(strategy, labels, embeddings) -> dict:
    """One phase 2 step (plain SGD, so gradient scale shows) of an identity embedder on the global batch.

    Returns the loss it reports and the embedder's kernel after the step.
    """
    import keras
    import tensorflow as tf

    from tests.trainer.fixtures import tiny_config
    from trainer.model import MetricLearner
    from trainer.phases import triplet_loss_fn

    with strategy.scope():
        inputs = keras.Input((2,))
        identity = keras.layers.Dense(2, use_bias=False, kernel_initializer="identity")(inputs)
        embedder = keras.Model(inputs, identity)
        learner = MetricLearner(embedder, triplet_loss_fn(tiny_config().train))
        learner.compile(optimizer=keras.optimizers.SGD(0.5))
    dataset = tf.data.Dataset.from_tensors((embeddings, labels))
    loss = float(learner.fit(dataset, epochs=1, verbose=0).history["loss"][0])
    return {"loss": loss, "kernel": embedder.layers[-1].kernel.numpy().tolist()}


def _fit_the_loss_once(strategy, copies: int) -> dict:
    """One epoch of one batch: `copies` copies of 4 posters (2 classes), a Dense layer and TripletSemiHardLoss under
    Keras' own `fit`; the loss it reports and the SGD step of the kernel."""
    import keras

    from trainer.losses import TripletSemiHardLoss

    features = np.random.default_rng(0).random((4, 5)).astype("float32")
    labels = np.array([0, 0, 1, 1])
    with strategy.scope():
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, kernel_initializer="ones")])
        model.compile(loss=TripletSemiHardLoss(0.5, "squared-L2"), optimizer=keras.optimizers.SGD(0.1))
    before = model.get_weights()[0].copy()
    history = model.fit(np.tile(features, (copies, 1)), np.tile(labels, copies), batch_size=4 * copies,
                        verbose=0, shuffle=False)
    return {"loss": float(history.history["loss"][0]), "step": (model.get_weights()[0] - before).tolist()}


def _measure() -> dict:
    import tensorflow as tf

    # Phase 2's semi-hard mining turns a last-bit difference in one update into a visible one two steps later, and
    # some CPU kernels reduce in an order that depends on thread timing (on a loaded machine the one-replica run
    # came out 1e-3 off once in a few runs): deterministic kernels make both runs reproducible.
    tf.config.experimental.enable_op_determinism()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from tests.trainer.fixtures import tiny_config
    from trainer import losses
    from trainer.distribute import make_strategy

    two = make_strategy("mirrored")
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    labels, embeddings = _mining_batch()
    margin, metric = tiny_config().train.triplet_margin, tiny_config().train.triplet_distance
    halves = [float(losses.triplet_semihard_loss(labels[s], embeddings[s], margin, metric))
              for s in (slice(0, 4), slice(4, 8))]
    return {
        "replicas": {name: make_strategy(name).num_replicas_in_sync for name in ("mirrored", "auto", "default")},
        "two_replicas": _train_tiny(two, per_replica_batch=8),
        "one_replica": _train_tiny(one, per_replica_batch=16),
        "mining": {"global": float(losses.triplet_semihard_loss(labels, embeddings, margin, metric)),
                   "per_replica_mean": sum(halves) / 2,
                   "two_replicas": _mining_step(two, labels, embeddings),
                   "one_replica": _mining_step(one, labels, embeddings)},
        # The default strategy for one replica; `two` again for two (a second MirroredStrategy over the same devices
        # would reuse its collectives' instance keys).
        "loss_scaling": {"one_replica": _fit_the_loss_once(tf.distribute.get_strategy(), 1),
                         "two_replicas": _fit_the_loss_once(two, 2)},
    }


def _fork_workers(cluster: dict, logs: list[str], argv: list[str]) -> list[int]:
    """Worker i of `cluster` runs `posters <argv>` (`pipelines.cli.main`) in a child forked from this process, its
    output to `logs[i]`; returns their pids. The imports (this module's: TensorFlow and `trainer.train`, what the
    command imports) are paid once, before the fork; nothing has run in TensorFlow yet, so each child starts its own
    runtime (and its own gRPC server), and so can this process after the fork (`_measure`)."""
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
    return pids


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Arguments: none (the measurements alone), or CLUSTER LOG… -- ARGV… (also the workers: `_fork_workers`).
    pids = []
    if len(sys.argv) > 1:
        separator = sys.argv.index("--")
        pids = _fork_workers(json.loads(sys.argv[1]), sys.argv[2:separator], sys.argv[separator + 1:])
    results = {"measured": _measure()}
    if pids:
        results["workers"] = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print(json.dumps(results))
