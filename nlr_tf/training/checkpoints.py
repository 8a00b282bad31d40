"""Copying parts of a trained model (its backbone, its classifier) from a checkpoint.

Restoring a part proves it matched: every variable of the part must be
found in the checkpoint. Where checkpoints live: `model_dir`.
"""

import keras
import tensorflow as tf

from nlr_tf.training.model_dir import CheckpointError, resolve_checkpoint


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
