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
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise StrategyError(f"train.strategy is {name!r}; choose auto, mirrored, multi_worker or default")


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
    return tuple(context.all_gather(tensor, axis=0) for tensor in tensors)
