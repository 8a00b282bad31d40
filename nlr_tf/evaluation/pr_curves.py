"""Precision-recall curves (Veit Fig. 6).

Every counted (image, class) entry in one ranking, as APall does, and per
label-map category; unverified entries are left out, as by every metric.
Written as TensorBoard PR-curve summaries (the `pr_curves` plugin's format,
`summaries.write_tensorboard`) and as a PNG.
"""

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
from matplotlib.figure import Figure

from nlr_tf.evaluation import plotting
from nlr_tf.metrics import VerifiedEntries

PR_THRESHOLDS = 201  # thresholds i / 200, as TensorBoard's PR-curve plugin draws them
_CHUNK_ENTRIES = 1 << 22


def bucket_counts(entries: VerifiedEntries, num_thresholds: int = PR_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Verified positives and negatives per class and score bucket.

    Bucket i holds the scores in [i / (T-1), (i+1) / (T-1)), the last one
    score 1, as TensorBoard's PR-curve plugin thresholds them.

    Returns:
        (tp, fp): int64 [d, T] each: verified positive / negative entries of
        each class whose score falls in each bucket.
    """
    d, t = entries.num_classes, num_thresholds
    tp, fp = np.zeros(d * t, np.int64), np.zeros(d * t, np.int64)
    classes = entries.classes
    for r in range(0, classes.size, _CHUNK_ENTRIES):  # chunks of entries: bounded temporaries
        part = slice(r, r + _CHUNK_ENTRIES)
        bucket = np.clip(np.floor(entries.scores[part] * (t - 1)), 0, t - 1).astype(np.int64)
        bucket += classes[part].astype(np.int64) * t
        positive = entries.labels[part]
        tp += np.bincount(bucket[positive], minlength=d * t)
        fp += np.bincount(bucket[~positive], minlength=d * t)
    return tp.reshape(d, t), fp.reshape(d, t)


def pr_curve_data(tp_buckets: np.ndarray, fp_buckets: np.ndarray) -> np.ndarray:
    """The PR-curve plugin's tensor from bucket counts [T] (summed over pooled classes).

    Returns:
        float32 [6, T]: true positives, false positives, true negatives,
        false negatives, precision and recall at each threshold i / (T-1)
        (an entry is predicted positive if its score is >= the threshold).
    """
    tp = np.cumsum(tp_buckets[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(fp_buckets[::-1])[::-1].astype(np.float64)
    tn, fn = fp[0] - fp, tp[0] - tp
    precision = tp / np.maximum(1.0, tp + fp)
    recall = tp / np.maximum(1.0, tp + fn)
    return np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float32)


def pr_curves(
    entries: VerifiedEntries, categories: Sequence[str], num_thresholds: int = PR_THRESHOLDS
) -> dict[str, np.ndarray]:
    """Class-agnostic PR curves: `"all"` classes pooled, then each category's classes pooled.

    Args:
        entries: `VerifiedEntries`. The verified entries and their scores
            (`VerifiedEntries.from_dense` of [N, d] arrays).
        categories: list of str [d]. Each class's label-map category.
        num_thresholds: int. Evenly spaced thresholds in [0, 1].

    Returns:
        dict of name to float32 [6, T] (see `pr_curve_data`); categories
        only when there are at least two.
    """
    tp, fp = bucket_counts(entries, num_thresholds)
    curves = {"all": pr_curve_data(tp.sum(axis=0), fp.sum(axis=0))}
    names = sorted(set(categories))
    if len(names) > 1:
        for name in names:
            members = [c for c, cat in enumerate(categories) if cat == name]
            curves[name] = pr_curve_data(tp[members].sum(axis=0), fp[members].sum(axis=0))
    return curves


def _drawn(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at the thresholds that keep at least one entry."""
    keep = data[0] + data[1] > 0
    return data[5][keep], data[4][keep]


def plot_pr_curves(
    curves: dict[str, np.ndarray],
    path: str,
    baseline: Optional[dict[str, np.ndarray]] = None,
    max_panels: int = 12,
) -> None:
    """The PR curves as a PNG: one panel per curve, the baseline dashed when given.

    With more curves than `max_panels`, "all" and the categories with the
    most counted positives are drawn.
    """
    names = ["all"] + sorted((n for n in curves if n != "all"), key=lambda n: -curves[n][0, 0])
    names = names[:max_panels]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        ax.plot(*_drawn(curves[name]), color=plotting.MODEL, label="model")
        if baseline is not None and name in baseline:
            ax.plot(*_drawn(baseline[name]), color=plotting.BASELINE, linestyle="--", label="baseline")
        positives = int(curves[name][0, 0])
        ax.set_title(f"{'all classes' if name == 'all' else name} ({positives} verified positives)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if baseline is not None:
        axes.flat[0].legend(fontsize=8, loc="lower left")
    plotting.save_figure(fig, path)
