"""The one `tf.distribute` strategy factory."""

import json
import os
from typing import Optional

import tensorflow as tf

from nlr_tf.training.config import STRATEGIES

# One strategy per kind and device set for the life of the process: two
# strategies over the same devices would draw the same collective instance
# keys, and TensorFlow's collective runtime rejects the second one's ops.
_CACHE: dict[tuple, tf.distribute.Strategy] = {}


def get_strategy(name: str, tpu: Optional[str] = None, devices: Optional[list[str]] = None) -> tf.distribute.Strategy:
    """Returns the strategy called `name`.

    Args:
        name: str. "default" (one device), "mirrored" (all local GPUs, or
            `devices`), "multi_worker_mirrored" (workers from TF_CONFIG) or
            "tpu".
        tpu: str. TPU name or address for "tpu" ("" or "local" for a TPU VM).
        devices: list of str. Devices for "mirrored" (e.g. ["/cpu:0",
            "/cpu:1"]); default all local GPUs, else the CPU.

    Raises:
        ValueError: an unknown name, a missing TF_CONFIG for
            multi-worker training, or no reachable TPU.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    key = (name, tpu, tuple(devices or ()))
    if key not in _CACHE:
        _CACHE[key] = _make_strategy(name, tpu, devices)
    return _CACHE[key]


def _make_strategy(name: str, tpu: Optional[str], devices: Optional[list[str]]) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices or None)
    if name == "multi_worker_mirrored":
        config = os.environ.get("TF_CONFIG")
        if not config:
            raise ValueError(
                "--strategy=multi_worker_mirrored needs the TF_CONFIG environment variable (cluster and task)"
            )
        try:
            json.loads(config)
        except json.JSONDecodeError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError, RuntimeError) as e:
            raise ValueError(f"cannot reach a TPU (--tpu={tpu!r}): {str(e).splitlines()[0]}") from None
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this worker writes the final outputs (every worker saves checkpoints, as MWMS requires)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)
