"""Masked losses, normalized over the global batch under tf.distribute.

Each loss is a sum over the entries that count (the mask) divided by the
number of such entries in the *global* batch, all-reduced across replicas.
The optimizer sums gradients over replicas, so the update equals the one a
single device would make on the whole global batch, whatever the number of
replicas. Unverified entries have mask 0: they add nothing to the sum and
nothing to the count, so they are ignored, never treated as negatives.
"""

import tensorflow as tf


def global_sum(value: tf.Tensor) -> tf.Tensor:
    """Sum of `value` over all replicas (the value itself outside tf.distribute)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def masked_mean(per_entry: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """This replica's share of the mean of `per_entry` over masked-in entries.

    Args:
        per_entry: float [B, d] loss per (example, class).
        mask: float [B, d], 1 where the entry counts.

    Returns:
        Scalar: local masked sum / global masked count (0 when nothing counts).
    """
    mask = tf.cast(mask, per_entry.dtype)
    count = global_sum(tf.reduce_sum(mask))
    return tf.math.divide_no_nan(tf.reduce_sum(per_entry * mask), count)


def masked_bce_with_logits(labels: tf.Tensor, logits: tf.Tensor, mask: tf.Tensor, weights=None) -> tf.Tensor:
    """Binary cross-entropy of sigmoid(logits) against (possibly soft) labels, masked mean.

    `weights` [B, d], if given, multiply each entry's loss; the mean still
    divides by the number of masked-in entries (a weight scales a loss, it
    does not renormalize the batch).
    """
    labels = tf.cast(labels, logits.dtype)
    per_entry = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    if weights is not None:
        per_entry = per_entry * tf.cast(weights, per_entry.dtype)
    return masked_mean(per_entry, mask)


def masked_l1(labels: tf.Tensor, values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Absolute difference, masked mean (Veit's cleaning loss)."""
    return masked_mean(tf.abs(values - tf.cast(labels, values.dtype)), mask)
