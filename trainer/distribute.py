"""The tf.distribute strategy from `train.strategy`, and the global batch that follows from it.

- `auto`: MirroredStrategy over the GPUs when there are several, else the default (one device) strategy;
- `mirrored`: MirroredStrategy over every GPU, or over every logical CPU device when there is no GPU;
- `multi_worker`: MultiWorkerMirroredStrategy over the cluster in `TF_CONFIG`;
- `default`: the default strategy (one device, no replicas).

The strategy must be created before any model or variable, and `tf.config.set_logical_device_configuration`
(several CPU replicas in tests) before TensorFlow initialises its devices.
"""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf


class StrategyError(ValueError):
    """A strategy setting that cannot work on this machine; the message says what to change."""


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
    if name == "multi_worker":
        if "cluster" not in json.loads(os.environ.get("TF_CONFIG", "{}")):
            raise StrategyError("train.strategy=multi_worker needs TF_CONFIG with the cluster spec of every worker "
                                "(https://www.tensorflow.org/guide/distributed_training#TF_CONFIG); on one machine "
                                "use auto or mirrored")
        return KerasMultiWorkerMirroredStrategy()
    raise StrategyError(f"train.strategy is {name!r}; choose auto, mirrored, multi_worker or default")


class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with a `reduce` that Keras 3's `fit` can call.

    Keras 3.15's TensorFlow trainer calls `strategy.reduce("MEAN", (x, y), axis=None)` on a whole batch structure
    (`_maybe_symbolic_build`) and `reduce("MEAN", scalar_log, axis=0)` on every step's scalar logs
    (`reduce_per_replica`); the collective strategy accepts neither (a nested structure: "Attempt to convert a
    value (PerReplica…) to a Tensor"; axis 0 of a scalar: "Invalid reduction dimension 0"), so `fit` fails on its
    first batch (keras-team/keras#20585, tensorflow/tensorflow#72388). Here `reduce` maps over the structure and
    reduces scalars without an axis. A tensor the collectives cannot reduce (uint8 pixels: Keras reduces the first
    batch only to learn its shapes) comes back as this worker's own. Every other behaviour is the strategy's own.
    """

    REDUCIBLE = (tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32, tf.int64)

    def reduce(self, reduce_op, value, axis):
        def one(item):
            local = tf.convert_to_tensor(self.experimental_local_results(item)[0])
            if local.dtype not in self.REDUCIBLE:
                return local
            return super(KerasMultiWorkerMirroredStrategy, self).reduce(
                reduce_op, item, axis if local.shape.rank else None)

        return tf.nest.map_structure(one, value)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_rank() -> tuple[int, int]:
    """(this worker's index, number of workers) from TF_CONFIG, the chief first; (0, 1) outside a cluster."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    cluster, task = tf_config.get("cluster", {}), tf_config.get("task")
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if not task or chiefs + workers == 0:
        return 0, 1
    rank = 0 if task.get("type") == "chief" else chiefs + int(task.get("index", 0))
    return rank, chiefs + workers


def sum_over_workers(strategy: tf.distribute.Strategy, values: np.ndarray) -> np.ndarray:
    """`values` summed over every worker (each worker passes its own); `values` itself on one worker.

    Also a barrier: no worker returns before every worker has called it.
    """
    if not is_multi_worker(strategy):
        return values
    local_replicas = strategy.num_replicas_in_sync // worker_rank()[1]
    zeros = np.zeros_like(values)

    def share(context):  # one replica per worker contributes, the others add zeros
        return tf.constant(values if context.replica_id_in_sync_group % local_replicas == 0 else zeros)

    per_replica = strategy.experimental_distribute_values_from_function(share)
    return strategy.reduce("SUM", per_replica, axis=None).numpy()


def distribute_batches(strategy: tf.distribute.Strategy, worker_batches, global_batch: int):
    """What `fit` takes: `worker_batches()` yields this worker's share of each global batch.

    One worker: that share is the global batch, and Keras splits it over the local replicas. Several workers: each
    worker's dataset is its own (the input pipelines shard the files), split over its local replicas in order.
    """
    if not is_multi_worker(strategy):
        return worker_batches()

    # Built here, eagerly: inside the function the strategy calls, seeded shuffles would take another graph seed.
    batches = worker_batches()

    def per_worker(context: tf.distribute.InputContext):
        assert context.input_pipeline_id == worker_rank()[0], "input pipelines follow TF_CONFIG's worker order"
        return batches.rebatch(context.get_per_replica_batch_size(global_batch))

    return strategy.distribute_datasets_from_function(per_worker)


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy) -> int:
    """Phase 1's batch: every replica gets `per_replica` examples of each global batch."""
    return per_replica * strategy.num_replicas_in_sync


def check_divides(batch_size: int, strategy: tf.distribute.Strategy, what: str) -> None:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise StrategyError(f"{what} = {batch_size} does not split evenly over {replicas} replicas")


def is_chief() -> bool:
    """True on the worker that writes outputs: the chief, else worker 0; always outside multi-worker training."""
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = tf_config.get("task")
    if not task:
        return True
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def gather_global_batch(*tensors: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Inside a replica's step: each tensor concatenated over every replica (axis 0), in replica order.

    The gather is differentiable: its gradient sums the upstream gradients of all replicas and hands each
    replica the slice of its own examples, so a loss computed on the gathered batch trains every replica.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors
    # all_gather sends each tensor to its own device, and under MultiWorkerMirroredStrategy with one device per
    # worker a traced step's tensors carry none ("destinations can not be empty"): pin them to it first.
    local_devices = tf.distribute.get_strategy().extended.worker_devices
    if len(local_devices) == 1:
        with tf.device(local_devices[0]):
            tensors = tuple(tf.identity(tensor) for tensor in tensors)
    return tuple(context.all_gather(tensor, axis=0) for tensor in tensors)
