"""The model dir: every file an `nlr-train` run leaves, and reading them back.

    MODEL_DIR/
      config.json          the run's `TrainConfig`, with num_classes, backbone, family
      checkpoints/ckpt-N   training state; a run started again resumes from the last
      best/ckpt-N          the best evaluation's weights (--restore_best)
      eval_history.json    the training-time evaluations
      model.keras          the final model, written when training ends
      backbone.weights.h5  its backbone's weights alone, for another run's --backbone_weights (as ImageNet's file)
      train_result.json    final losses, step count and best evaluation
      train/, eval_SPLIT/  TensorBoard events; `nlr-eval` writes eval_SPLIT/metrics.json

and what a family's training task keeps (`nlr_tf.training.tasks`):

      label_issues.json    confident learning: the noisy examples it drops; read back when the run resumes
      cleannet_weights.npz CleanNet: every noisy example's label weights; read back when the run resumes
      cleannet.keras       CleanNet: the trained verification network, for inspection and reuse

Loading a model needs only this module (and the model classes), never the
trainer.
"""

import os
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

# Importing a layer's module registers it for safe-mode loading (the model classes: `load_trained_model`).
from nlr_tf.backbones import scaling  # noqa: F401
from nlr_tf.data import files
from nlr_tf.data.feature_cache import weights_source
from nlr_tf.models.methods import FAMILIES
from nlr_tf.models.precision import apply_precision

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
BACKBONE_WEIGHTS_FILE = "backbone.weights.h5"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
EVAL_HISTORY_FILE = "eval_history.json"
RESULT_FILE = "train_result.json"
METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.npz"
# What a family's training task keeps.
LABEL_ISSUES_FILE = "label_issues.json"
LABEL_WEIGHTS_FILE = "cleannet_weights.npz"
CLEANNET_FILE = "cleannet.keras"


class CheckpointError(ValueError):
    """A checkpoint or model dir that is absent or does not fit the model."""


def eval_dir(model_dir: str, split: str) -> str:
    """Where evaluations on `split` go: TensorBoard events and `nlr-eval`'s metrics.json."""
    return os.path.join(model_dir, f"eval_{split}")


def metrics_path(model_dir: str, split: str) -> str:
    return os.path.join(eval_dir(model_dir, split), METRICS_FILE)


def scores_path(model_dir: str, split: str) -> str:
    """Where a run's scores on `split` are kept beside its metrics (the reproduction's and nlr-compare's runs)."""
    return os.path.join(eval_dir(model_dir, split), SCORES_FILE)


_read_json = files.read_json_if_exists
write_json = files.write_json  # atomic (a reader never sees half a file), making its folder if needed


def read_run_config(model_dir: str) -> Optional[dict[str, Any]]:
    return _read_json(os.path.join(model_dir, CONFIG_FILE))


def read_result(model_dir: str) -> Optional[dict[str, Any]]:
    """What `train` returned when the run ended (None for a run that has not ended)."""
    return _read_json(os.path.join(model_dir, RESULT_FILE))


def read_eval_history(model_dir: str) -> list[dict]:
    return _read_json(os.path.join(model_dir, EVAL_HISTORY_FILE)) or []


def write_eval_history(model_dir: str, history: list[dict]) -> None:
    write_json(os.path.join(model_dir, EVAL_HISTORY_FILE), history)


def read_label_issues(model_dir: str) -> Optional[dict[str, Any]]:
    """Confident learning's record of the noisy examples it drops (None if the run has none yet)."""
    return _read_json(os.path.join(model_dir, LABEL_ISSUES_FILE))


def write_label_issues(model_dir: str, record: dict[str, Any]) -> None:
    """`record`: `num_noisy`, `num_issues`, `folds` and the flagged examples' `ids`."""
    write_json(os.path.join(model_dir, LABEL_ISSUES_FILE), record)


def label_weights_path(model_dir: str) -> str:
    return os.path.join(model_dir, LABEL_WEIGHTS_FILE)


def read_label_weights(model_dir: str) -> Optional[tuple[list[str], np.ndarray]]:
    """CleanNet's label weights: (example ids, float [N, d]); None if the run has none yet."""
    path = label_weights_path(model_dir)
    if not files.isfile(path):
        return None
    arrays = files.load_npz(path)
    return arrays["ids"].tolist(), arrays["weights"]


def write_label_weights(model_dir: str, ids: list[str], weights: np.ndarray) -> None:
    """Writes CleanNet's label weights atomically."""
    files.save_npz(label_weights_path(model_dir), ids=np.array(ids, dtype=object).astype(str), weights=weights)


def save_cleannet(model_dir: str, net: keras.Model) -> None:
    """Saves the trained CleanNet (loads in safe mode once `nlr_tf.models.cleannet.network` is imported)."""
    net.save(os.path.join(model_dir, CLEANNET_FILE))


def resolve_checkpoint(path: str) -> tuple[str, Optional[dict[str, Any]]]:
    """The checkpoint prefix and run config of `path` (a model dir or a checkpoint prefix).

    A model dir stands for the weights of its final model: those of its best
    evaluation when the run restored them (`--restore_best`, as its
    `model.keras`), else its last checkpoint (also of a run not finished).
    """
    if files.isdir(path):
        result = read_result(path) or {}
        if result.get("restored_best"):
            best = os.path.join(path, BEST_DIR, f"ckpt-{result.get('best_step')}")
            if not tf.io.gfile.exists(best + ".index"):
                raise CheckpointError(f"{path}: the run restored its best weights, but {best} is not there")
            return best, read_run_config(path)
        prefix = tf.train.latest_checkpoint(os.path.join(path, CHECKPOINT_DIR))
        if prefix is None:
            raise CheckpointError(f"{path}: no checkpoint in {os.path.join(path, CHECKPOINT_DIR)}")
        return prefix, read_run_config(path)
    if not tf.io.gfile.exists(path + ".index"):
        raise CheckpointError(f"{path}: neither a model dir nor a checkpoint prefix")
    return path, read_run_config(os.path.dirname(os.path.dirname(path)))


# The layout of `model.keras`: 2 since method models are functional (their heads a model of their own).
# A run dir records the layout it was saved with (config.json's `model_format`; absent: 1).
MODEL_FORMAT = 2


def load_trained_model(model_dir: str, precision: str = "none") -> tuple[keras.Model, dict[str, Any]]:
    """The final model of an `nlr-train` run and its run config (safe-mode loading).

    `precision`: the `--mixed_precision` its backbone runs under here,
    whatever the run trained under (the weights are float32 in both).
    """
    run_config = read_run_config(model_dir)
    model_path = os.path.join(model_dir, MODEL_FILE)
    if run_config is None or not files.isfile(model_path):
        raise CheckpointError(f"{model_dir!r} holds no finished run (needs {MODEL_FILE} and {CONFIG_FILE})")
    if run_config.get("model_format", 1) != MODEL_FORMAT:
        raise CheckpointError(
            f"{model_path} was saved by an earlier nlr_tf, whose method models were not functional models, and "
            "does not load into today's; train the run again (its checkpoints still serve as --init_checkpoint)"
        )
    for family in FAMILIES.values():  # importing each model class registers it for safe-mode loading
        family.model_class()
    model = keras.saving.load_model(model_path, safe_mode=True)
    bad = [w.path for w in model.weights if not np.all(np.isfinite(keras.ops.convert_to_numpy(w)))]
    if bad:
        raise CheckpointError(f"{model_path} holds non-finite weights ({', '.join(bad[:3])}): the run diverged")
    apply_precision(model, precision)
    return model, run_config


def save_backbone_weights(model: keras.Model, backbone_name: str, path: str) -> None:
    """Writes the weights of a model's backbone network (without its pixel scaling) where `--backbone_weights`
    reads them: `build_backbone(backbone_name, weights=path)` loads them into the same network."""
    model.backbone.get_layer(backbone_name).save_weights(path)


def backbone_source(run_config: dict[str, Any], model_dir: str = "") -> str:
    """What a run's backbone weights are (the identity its feature caches carry).

    A run that trains its backbone: its own last checkpoint (`model_dir`,
    once it has one). A frozen backbone: the checkpoint it started from, else
    its weights ("none", "imagenet" or a file).
    """
    if run_config.get("train_backbone") and model_dir:
        return weights_source(resolve_checkpoint(model_dir)[0])
    if run_config.get("init_checkpoint"):
        return weights_source(resolve_checkpoint(run_config["init_checkpoint"])[0])
    return weights_source(run_config.get("backbone_weights") or "none")
