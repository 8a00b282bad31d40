"""Evaluating a trained model on a split: predictions, then the papers' metrics.

Scores come from the model dir's `model.keras` on the split's images (or,
for a head trained on a feature cache, on that cache's features: the
backbone inside the saved model is skipped). Metrics compare the scores
with the verified labels, ignoring unverified entries, as Veit evaluates
Open Images.
"""

import json
import os
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from nlr_tf.data import pipeline
from nlr_tf.data.schema import DatasetInfo
from nlr_tf.evaluation import metrics
from nlr_tf.models import methods as _methods  # noqa: F401  (registers the model classes for loading)
from nlr_tf.training.checkpoints import CONFIG_FILE, MODEL_FILE


class EvalError(ValueError):
    """A model dir or dataset that cannot be evaluated together."""


def load_trained_model(model_dir: str) -> tuple[keras.Model, dict[str, Any]]:
    """The final model of an `nlr-train` run and its run config."""
    model_path, config_path = os.path.join(model_dir, MODEL_FILE), os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(model_path) or not os.path.isfile(config_path):
        raise EvalError(f"{model_dir!r} holds no finished run (needs {MODEL_FILE} and {CONFIG_FILE})")
    with open(config_path) as f:
        run_config = json.load(f)
    return keras.saving.load_model(model_path, safe_mode=True), run_config


def predict(model, info: DatasetInfo, split: str, *, backbone: str, image_size: int = 0, batch_size: int = 64):
    """Scores and labels of every record of `split`, in the split's order.

    Returns:
        dict of numpy arrays: `scores`, `verified_labels`, `verified_mask`
        [N, d], `true_labels` [N, d] and `has_true` [N], and `id` [N].
    """
    ds = pipeline.make_split_dataset(
        info,
        split,
        batch_size,
        backbone=backbone,
        image_size=image_size or None,
        training=False,
        with_ids=True,
        with_true=True,
    )
    if info.feature_dim:
        forward = tf.function(lambda batch: model.scores_from_features(batch["features"]), reduce_retracing=True)
    else:
        forward = tf.function(lambda batch: model(batch["image"], training=False), reduce_retracing=True)
    parts: dict[str, list] = {
        k: [] for k in ("scores", "verified_labels", "verified_mask", "true_labels", "has_true", "id")
    }
    for batch in ds:
        parts["scores"].append(forward(batch).numpy())
        for key in ("verified_labels", "verified_mask", "true_labels", "has_true", "id"):
            parts[key].append(batch[key].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def per_category_map(per_class_ap: np.ndarray, info: DatasetInfo) -> dict[str, Optional[float]]:
    """mAP within each label-map category (Veit Table 3)."""
    out = {}
    for category in sorted({c.category for c in info.classes}):
        aps = per_class_ap[[i for i, c in enumerate(info.classes) if c.category == category]]
        aps = aps[~np.isnan(aps)]
        out[category] = float(aps.mean()) if aps.size else None
    return out


def evaluate(model, info: DatasetInfo, split: str, *, backbone: str, image_size: int = 0, batch_size: int = 64):
    """The metrics dict of `model` on `split` (what `nlr-eval` writes to metrics.json)."""
    if info.num_classes != model.num_classes:
        raise EvalError(f"the model has {model.num_classes} classes but dataset {info.path!r} has {info.num_classes}")
    p = predict(model, info, split, backbone=backbone, image_size=image_size, batch_size=batch_size)
    report = metrics.evaluate(p["scores"], p["verified_labels"], p["verified_mask"])
    result = {
        "split": split,
        "dataset": info.path,
        "num_images": int(len(p["scores"])),
        "multi_label": info.multi_label,
        **report.as_dict(info.class_names),
        "per_category_mAP": per_category_map(report.per_class_ap, info),
    }
    if p["has_true"].all():
        # The built-in benchmark knows the truth of every entry.
        truth = metrics.evaluate(p["scores"], p["true_labels"])
        result["against_truth"] = {"mAP": truth.map, "APall": truth.ap_all, "top1": truth.top1}
    return result
