"""Running a model over every record of a split: scores, labels and the model's extra outputs (c-hat).

Used by training-time evaluation, `nlr-eval`, `nlr-clean-labels` and the
reproduction; it needs the model and the input pipeline only.
"""

import weakref

import numpy as np
import tensorflow as tf

from nlr_tf.data import pipeline
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.progress import progress_bar
from nlr_tf.data.schema import DatasetInfo

_FORWARD_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _forward_function(model, jit_compile: bool = False):
    """The model's traced inference step (XLA-compiled if asked), built once per model and mode."""
    functions = _FORWARD_FUNCTIONS.setdefault(model, {})
    if jit_compile not in functions:

        @tf.function(reduce_retracing=True, jit_compile=jit_compile)
        def forward(batch):
            features = model.features(batch, training=False)
            out = {"scores": model.heads(features, training=False)["scores"]}
            return out | model.extra_output_values(batch, features)

        functions[jit_compile] = forward
    return functions[jit_compile]


def split_dataset(info: DatasetInfo, split: str, *, backbone: str, image_size: int = 0, batch_size: int = 64):
    """The batches `predict` reads: every record of `split` once, in order, with ids and known truth."""
    return pipeline.make_split_dataset(
        info,
        split,
        batch_size,
        input_config=InputConfig(backbone=backbone, image_size=image_size or None),
        training=False,
        with_ids=True,
        with_true=True,
    )


def predict(
    model,
    info: DatasetInfo,
    split: str,
    *,
    backbone: str,
    image_size: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    dataset=None,
    jit_compile: bool = False,
) -> dict[str, np.ndarray]:
    """Scores and labels of every record of `split`, in the split's order.

    Features come from the backbone on the images, or from `info` itself
    when it is a feature cache. `dataset`: the `split_dataset` of these
    arguments, when the caller keeps one (building it traces its parsing).

    Returns:
        dict of numpy arrays: `scores`, `noisy_labels`, `verified_labels`,
        `verified_mask`, `true_labels` [N, d], `has_true` [N], `id` [N]
        (bytes), and the model's `extra_outputs` (label cleaning: `cleaned`
        [N, d], c-hat).

    `jit_compile`: the model's step compiled with XLA (ids and other
    strings stay outside it).
    """
    ds = dataset or split_dataset(info, split, backbone=backbone, image_size=image_size, batch_size=batch_size)
    forward = _forward_function(model, jit_compile)

    label_keys = ("id", "noisy_labels", "verified_labels", "verified_mask", "true_labels", "has_true")
    parts: dict[str, list] = {k: [] for k in (*label_keys, "scores", *model.extra_outputs)}
    bar = progress_bar(info.splits[split].num_records, f"predicting {split}", progress)
    for batch in ds:
        numeric = {k: v for k, v in batch.items() if v.dtype != tf.string}
        for key, value in forward(numeric).items():
            parts[key].append(value.numpy())
        for key in label_keys:
            parts[key].append(batch[key].numpy())
        bar.update(len(parts["id"][-1]))
    bar.close()
    return {k: np.concatenate(v) for k, v in parts.items() if v}
