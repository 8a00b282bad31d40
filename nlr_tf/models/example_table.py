"""Per-example values looked up by id inside a train step (confident learning's flags, CleanNet's weights)."""

import numpy as np
import tensorflow as tf


class ExampleTable:
    """id -> a row of float values [k]; ids it does not hold get the `default` row.

    A plain holder, not a layer: what it holds is estimated before training
    and kept in the model dir by the family that uses it, not in the
    model's saved state.

    Args:
        ids: list of str. Example ids (the TFRecords' `id`).
        values: float array [len(ids), k] (or [len(ids)] for k = 1).
        default: float or float array [k]. The row of an unknown id.
    """

    def __init__(self, ids: list[str], values, default):
        values = np.asarray(values, np.float32).reshape(len(ids), -1)
        if len(set(ids)) != len(ids):
            raise ValueError("example ids must be unique")
        k = values.shape[1] if len(ids) else np.size(default)
        default_row = np.broadcast_to(np.asarray(default, np.float32), (1, k))
        self.values = tf.constant(np.concatenate([values.reshape(-1, k), default_row]))
        keys = tf.constant(list(ids) or [""], tf.string)
        rows = tf.range(len(ids) or 1, dtype=tf.int64)
        self.index = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, rows), default_value=-1)
        self.size = len(ids)

    def __call__(self, ids: tf.Tensor) -> tf.Tensor:
        """float [B, k]: the rows of `ids` (string [B])."""
        rows = self.index.lookup(ids)
        rows = tf.where((rows < 0) | (rows >= self.size), tf.cast(self.size, tf.int64), rows)
        return tf.gather(self.values, rows)
