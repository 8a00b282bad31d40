"""Finding trained models' checkpoints and copying parts of them.

A "model dir" is what `nlr-train` writes: `config.json` (the run's
configuration, with `num_classes` and `backbone`), `checkpoints/ckpt-N` and,
once training ends, `model.keras`. Restoring a part proves it matched:
every variable of the part must be found in the checkpoint.
"""

import json
import os
from typing import Any, Optional

import keras
import tensorflow as tf

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that is absent or does not fit the model."""


def resolve_checkpoint(path: str) -> tuple[str, Optional[dict[str, Any]]]:
    """The checkpoint prefix and run config of `path` (a model dir or a checkpoint prefix)."""
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(os.path.join(path, CHECKPOINT_DIR))
        if prefix is None:
            raise CheckpointError(f"{path}: no checkpoint in {os.path.join(path, CHECKPOINT_DIR)}")
        config_path = os.path.join(path, CONFIG_FILE)
    else:
        if not tf.io.gfile.exists(path + ".index"):
            raise CheckpointError(f"{path}: neither a model dir nor a checkpoint prefix")
        prefix = path
        config_path = os.path.join(os.path.dirname(os.path.dirname(path)), CONFIG_FILE)
    run_config = None
    if os.path.isfile(config_path):
        with open(config_path) as f:
            run_config = json.load(f)
    return prefix, run_config


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
