"""Reading checkpoints back: a run's training state when it resumes, and parts of a trained model.

A resumed run restores the newest checkpoint that reads in full, skipping
damaged ones (cut short by a copy or a preempted write) with one line each.
Restoring a part (its backbone, its classifier) proves it matched: every
variable of the part must be found in the checkpoint. Where checkpoints
live: `model_dir`.
"""

import os
from typing import Optional

import keras
import tensorflow as tf
from absl import logging

from nlr_tf.data import files
from nlr_tf.training.model_dir import CheckpointError, resolve_checkpoint


def damaged_file(prefix: str) -> Optional[str]:
    """The file of the checkpoint `prefix` that does not read in full (its index or a data shard); None if every
    tensor reads (the bundle's checksums verified)."""
    try:
        # The reader of the prefix itself: `tf.train.load_checkpoint` first asks whether the path is a folder, which
        # a filesystem without real folders (ram://) answers yes for any prefix of a file.
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    except (tf.errors.OpError, IndexError, ValueError):
        return prefix + ".index"
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError):
        shards = files.glob(prefix + ".data-*")
        return shards[0] if len(shards) == 1 else prefix + ".data-*"
    return None


def steps(manager: tf.train.CheckpointManager) -> list[int]:
    """The steps of the checkpoints `manager` keeps (each saved with its step as its number: `ckpt-STEP`)."""
    return [int(prefix.rsplit("-", 1)[1]) for prefix in manager.checkpoints]


def restore_latest_readable(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager) -> Optional[str]:
    """Restores the newest checkpoint of `manager` that reads in full; returns its prefix (None: it has none).

    Each damaged checkpoint newer than it is skipped with one warning line
    naming its file (it stays on disk, and is written again when the run
    reaches its step).

    Raises:
        CheckpointError: the manager lists checkpoints, none of them readable
            (the run does not start over from random weights), or the
            restored one does not fit the model.
    """
    for prefix in reversed(manager.checkpoints):
        bad = damaged_file(prefix)
        if bad is None:
            checkpoint.restore(prefix).assert_existing_objects_matched()
            return prefix
        logging.warning("%s is truncated or unreadable: skipping checkpoint %s", bad, os.path.basename(prefix))
    if manager.checkpoints:
        names = ", ".join(os.path.basename(p) for p in manager.checkpoints)
        raise CheckpointError(
            f"no checkpoint in {manager.directory} reads in full ({names} damaged): "
            "the run does not start over from random weights; to train from the start, use a new --model_dir"
        )
    return None


class _Parts(tf.Module):
    """The named layers of a model, under the names they have in its checkpoints."""

    def __init__(self, layers: dict[str, keras.layers.Layer]):
        super().__init__()
        for name, layer in layers.items():
            setattr(self, name, layer)


def restore_parts(layers: dict[str, keras.layers.Layer], path: str) -> str:
    """Copies the named layers of a model from the checkpoint at `path`.

    Args:
        layers: dict of attribute name (e.g. "backbone", "classifier") to
            the layer to fill.
        path: str. Model dir or checkpoint prefix.

    Returns:
        The checkpoint prefix read.

    Raises:
        CheckpointError: the checkpoint lacks one of the layers' variables.
    """
    prefix, _ = resolve_checkpoint(path)
    status = tf.train.Checkpoint(model=_Parts(layers)).read(prefix)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise CheckpointError(f"{path} does not hold the {', '.join(layers)} of this model: {e}") from None
    status.expect_partial()
    return prefix
