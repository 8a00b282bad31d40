"""The papers' evaluation reports beyond the headline metrics.

- **Gain by class frequency and by annotation quality** (Veit Fig. 5):
  classes sorted by how many noisy annotations they have in the training
  set, or by the share of those that are correct, cut into 10 groups of
  near-equal size; per group the mean AP of the model and of a baseline and
  their difference.
- **Precision-recall curves** (Veit Fig. 6): every counted (image, class)
  entry in one ranking, as APall does, and per label-map category.
  Unverified entries are left out, as by every metric. Written as
  TensorBoard PR-curve summaries (the `pr_curves` plugin's format) and as a
  PNG.
- **Examples** (Hu Fig. 3, Veit Fig. 7): a grid of test images with their
  top-5 predictions, each marked right, wrong or unverified.

AP itself comes from `nlr_tf.models.metrics`; this module only groups,
counts and draws.
"""

import dataclasses
import glob
import math
import os
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.plugins.pr_curve import metadata as pr_metadata

from nlr_tf.data import schema
from nlr_tf.data.label_stats import split_stats
from nlr_tf.data.schema import DatasetInfo

NUM_GROUPS = 10
PR_THRESHOLDS = 201  # thresholds i / 200, as TensorBoard's PR-curve plugin draws them
TOP_K = 5
# Event files of an evaluation carry this suffix, so that evaluating again
# replaces them and leaves any other event file in the folder alone.
EVENTS_SUFFIX = ".nlr-eval"
PNG_FILES = ("gain_by_frequency.png", "gain_by_quality.png", "pr_curves.png", "examples.png")
_RIGHT, _WRONG, _UNKNOWN = "#1a9850", "#d73027", "#808080"
_CHUNK_ENTRIES = 1 << 22


# === Class statistics (Veit Fig. 4) ===
@dataclasses.dataclass
class ClassStatistics:
    """Per-class statistics of the training labels.

    Args:
        frequency: float [d]. Noisy annotations of each class in `noisy_split`.
        quality: float [d]. Share of a class's judged noisy annotations that
            are correct; NaN where none could be judged.
        noisy_split: str. The split counted for `frequency`.
        quality_split: str. The split whose annotations were judged.
        judged: int. Noisy annotations judged for `quality`.
    """

    frequency: np.ndarray
    quality: np.ndarray
    noisy_split: str
    quality_split: str
    judged: int


def class_statistics(info: DatasetInfo, noisy_split: str = "noisy", clean_split: str = "clean") -> ClassStatistics:
    """Class frequency and annotation quality of a dataset's training labels.

    Frequency counts the noisy annotations of `noisy_split`. Quality judges
    noisy annotations with `LabelStats`' rule (the truth where a record has
    it, else its verified labels) on whichever of `noisy_split` and
    `clean_split` judges more of them: the noisy split where the truth is
    known everywhere (the built-in benchmark), else the verified clean split
    (Open Images: only its images carry both noisy and verified labels).
    """
    if not info.has_split(noisy_split):
        raise schema.DatasetError(
            f"dataset {info.path!r} has no records in split {noisy_split!r} to count class frequencies; "
            f"it has: {', '.join(sorted(info.splits))}"
        )
    noisy = split_stats(info, noisy_split)
    judge, judge_split = noisy, noisy_split
    if clean_split != noisy_split and info.has_split(clean_split):
        clean = split_stats(info, clean_split)
        if clean.noisy_judged.sum() > noisy.noisy_judged.sum():
            judge, judge_split = clean, clean_split
    return ClassStatistics(
        frequency=noisy.noisy_count.astype(np.float64),
        quality=judge.annotation_quality(),
        noisy_split=noisy_split,
        quality_split=judge_split,
        judged=int(judge.noisy_judged.sum()),
    )


# === Gain binned by a class statistic (Veit Fig. 5) ===
def gain_by_group(
    statistic: np.ndarray,
    model_ap: np.ndarray,
    baseline_ap: np.ndarray,
    class_names: Optional[Sequence[str]] = None,
    num_groups: int = NUM_GROUPS,
) -> dict[str, Any]:
    """Mean AP gain over a baseline within groups of classes sorted by a statistic.

    Classes are sorted by `statistic` (ties keep class order) and cut into
    `num_groups` groups whose sizes differ by at most one (fewer groups if
    there are fewer classes). A class without AP on the evaluated split (no
    verified positive) or without the statistic is left out before cutting.

    Args:
        statistic: float [d]. The class statistic, NaN where undefined.
        model_ap: float [d]. Per-class AP of the model (NaN: undefined).
        baseline_ap: float [d]. Per-class AP of the baseline.
        class_names: list of str or None. Names listed per group.
        num_groups: int. Groups wanted. Defaults to 10.

    Returns:
        dict with `num_groups`, `left_out_without_ap`,
        `left_out_without_statistic` and `groups`: per group (rarest or
        noisiest first) `min`, `max` (the statistic's range), `num_classes`,
        `baseline_mAP`, `model_mAP`, `gain` (mean of model AP - baseline AP)
        and `classes`.
    """
    statistic = np.asarray(statistic, np.float64)
    model_ap, baseline_ap = np.asarray(model_ap, np.float64), np.asarray(baseline_ap, np.float64)
    if not statistic.shape == model_ap.shape == baseline_ap.shape or statistic.ndim != 1:
        raise ValueError(
            f"statistic, model_ap and baseline_ap must all be [d]; got {statistic.shape}, {model_ap.shape}, "
            f"{baseline_ap.shape}"
        )
    if num_groups < 1:
        raise ValueError(f"`num_groups` must be >= 1. Received: num_groups={num_groups}")
    has_ap = ~np.isnan(model_ap) & ~np.isnan(baseline_ap)
    has_stat = ~np.isnan(statistic)
    kept = np.flatnonzero(has_ap & has_stat)
    order = kept[np.argsort(statistic[kept], kind="stable")]
    names = list(class_names) if class_names is not None else [str(i) for i in range(statistic.size)]
    groups = []
    for g, members in enumerate(np.array_split(order, min(num_groups, order.size)) if order.size else []):
        groups.append(
            {
                "group": g + 1,
                "min": float(statistic[members].min()),
                "max": float(statistic[members].max()),
                "num_classes": int(members.size),
                "baseline_mAP": float(baseline_ap[members].mean()),
                "model_mAP": float(model_ap[members].mean()),
                "gain": float(np.mean(model_ap[members] - baseline_ap[members])),
                "classes": [names[c] for c in members],
            }
        )
    return {
        "num_groups": len(groups),
        "left_out_without_ap": int((~has_ap).sum()),
        "left_out_without_statistic": int((has_ap & ~has_stat).sum()),
        "groups": groups,
    }


def _range_text(group: dict[str, Any], percent: bool) -> str:
    fmt = (lambda v: f"{100 * v:.0f}%") if percent else (lambda v: f"{v:g}")
    low, high = fmt(group["min"]), fmt(group["max"])
    return low if low == high else f"{low}-{high}"


def format_gain_table(table: dict[str, Any], title: str, percent_range: bool = False) -> str:
    """A gain table as text: one row per group."""
    lines = [title]
    if table.get("skipped"):
        return "\n".join([title, f"  not reported: {table['skipped']}"])
    if not table["groups"]:
        lines.append("  no class has both an AP on this split and the statistic")
    elif table["num_groups"] < NUM_GROUPS:
        lines.append(f"  fewer than {NUM_GROUPS} classes to group: {table['num_groups']} groups of one class")
    left = table["left_out_without_ap"], table["left_out_without_statistic"]
    if any(left):
        lines.append(f"  left out: {left[0]} classes without a verified positive, {left[1]} without the statistic")
    lines.append(f"  {'group':>5}  {'range':<17}{'classes':>8}{'baseline AP':>13}{'model AP':>10}{'gain':>8}")
    for g in table["groups"]:
        lines.append(
            f"  {g['group']:>5}  {_range_text(g, percent_range):<17}{g['num_classes']:>8}"
            f"{100 * g['baseline_mAP']:>13.2f}{100 * g['model_mAP']:>10.2f}{100 * g['gain']:>+8.2f}"
        )
    return "\n".join(lines)


def plot_gain(table: dict[str, Any], path: str, title: str, xlabel: str, percent_range: bool = False) -> None:
    """Bar plot of the mean AP gain per group (Veit Fig. 5) as a PNG."""
    groups = table["groups"]
    fig = Figure(figsize=(max(6.0, 0.8 * len(groups) + 2), 4.0), dpi=100)
    ax = fig.subplots()
    gains = [100 * g["gain"] for g in groups]
    ax.bar(range(len(groups)), gains, color=[_RIGHT if v >= 0 else _WRONG for v in gains])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(groups)), [_range_text(g, percent_range) for g in groups], rotation=30, ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean AP gain over baseline (points)")
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def _save(fig: Figure, path: str) -> None:
    """Lays out and writes a figure as a PNG (Agg, no display needed)."""
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(path)


# === Precision-recall curves (Veit Fig. 6) ===
def bucket_counts(
    scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None, num_thresholds: int = PR_THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """Counted positives and negatives per class and score bucket.

    Bucket i holds the scores in [i / (T-1), (i+1) / (T-1)), the last one
    score 1, as TensorBoard's PR-curve plugin thresholds them.

    Returns:
        (tp, fp): int64 [d, T] each: counted positive / negative entries of
        each class whose score falls in each bucket.
    """
    scores = np.asarray(scores, np.float32)
    n, d = scores.shape
    t = num_thresholds
    tp, fp = np.zeros(d * t, np.int64), np.zeros(d * t, np.int64)
    offsets = np.arange(d, dtype=np.int64) * t
    step = max(1, _CHUNK_ENTRIES // max(d, 1))
    for r in range(0, n, step):  # chunks of rows: bounded memory on large evaluations
        rows = slice(r, r + step)
        bucket = np.clip(np.floor(scores[rows] * (t - 1)), 0, t - 1).astype(np.int64) + offsets
        positive = np.asarray(labels[rows]) > 0
        counted = np.ones_like(positive) if mask is None else np.asarray(mask[rows]) > 0
        tp += np.bincount(bucket[counted & positive], minlength=d * t)
        fp += np.bincount(bucket[counted & ~positive], minlength=d * t)
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
    scores: np.ndarray,
    labels: np.ndarray,
    mask: Optional[np.ndarray],
    categories: Sequence[str],
    num_thresholds: int = PR_THRESHOLDS,
) -> dict[str, np.ndarray]:
    """Class-agnostic PR curves: `"all"` classes pooled, then each category's classes pooled.

    Args:
        scores, labels, mask: [N, d] as for `metrics.evaluate`.
        categories: list of str [d]. Each class's label-map category.
        num_thresholds: int. Evenly spaced thresholds in [0, 1].

    Returns:
        dict of name to float32 [6, T] (see `pr_curve_data`); categories
        only when there are at least two.
    """
    tp, fp = bucket_counts(scores, labels, mask, num_thresholds)
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
        ax.plot(*_drawn(curves[name]), color="#2166ac", label="model")
        if baseline is not None and name in baseline:
            ax.plot(*_drawn(baseline[name]), color="#b2182b", linestyle="--", label="baseline")
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
    _save(fig, path)


# === Examples (Hu Fig. 3, Veit Fig. 7) ===
def top_k_judged(p: dict[str, np.ndarray], index: int, k: int = TOP_K) -> list[tuple[int, float, Optional[bool]]]:
    """Top-k predictions of image `index` as (class, score, right?).

    Right or wrong against the truth where the image has it, else against
    its verified labels; None for an unverified class.
    """
    scores = p["scores"][index]
    top = np.argsort(-scores, kind="stable")[:k]
    out = []
    for c in top:
        if p["has_true"][index]:
            right: Optional[bool] = bool(p["true_labels"][index, c] > 0)
        elif p["verified_mask"][index, c] > 0:
            right = bool(p["verified_labels"][index, c] > 0)
        else:
            right = None
        out.append((int(c), float(scores[c]), right))
    return out


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _present(p: dict[str, np.ndarray], index: int) -> tuple[str, np.ndarray]:
    if p["has_true"][index]:
        return "truth", np.flatnonzero(p["true_labels"][index] > 0)
    return "verified", np.flatnonzero((p["verified_labels"][index] > 0) & (p["verified_mask"][index] > 0))


def first_images(info: DatasetInfo, split: str, count: int) -> list[tuple[str, np.ndarray]]:
    """The ids and decoded RGB images (uint8 [H, W, 3]) of the first `count` records of `split`, in file order."""
    spec = {
        schema.IMAGE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        schema.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    out = []
    for record in tf.data.TFRecordDataset(info.split_files(split)).take(count):
        example = tf.io.parse_single_example(record, spec)
        image = tf.io.decode_image(example[schema.IMAGE_ENCODED], channels=3, expand_animations=False)
        out.append((example[schema.IMAGE_ID].numpy().decode("utf-8"), image.numpy()))
    return out


def render_examples(
    images: Sequence[np.ndarray],
    p: dict[str, np.ndarray],
    indices: Sequence[int],
    class_names: Sequence[str],
    baseline: Optional[dict[str, np.ndarray]] = None,
    k: int = TOP_K,
    cols: int = 4,
) -> np.ndarray:
    """A grid of images, each with its top-k predictions marked right (green), wrong (red) or unverified (gray).

    Args:
        images: uint8 [H, W, 3] arrays, one per entry of `indices`.
        p: predictions of the model (`prediction.predict`).
        indices: int. Rows of `p` the images belong to.
        class_names: list of str. Names shown.
        baseline: the baseline's predictions aligned with `p`, or None; its
            top-k is shown beside the model's (as Veit Fig. 7).
        k: int. Predictions shown per image. Defaults to 5.
        cols: int. Images per row. Defaults to 4.

    Returns:
        uint8 [H, W, 3]: the rendered grid.
    """
    cols = max(1, min(cols, len(indices)))
    rows = math.ceil(len(indices) / cols)
    cell_w = 3.6 if baseline is not None else 2.4
    fig = Figure(figsize=(cell_w * cols, 3.4 * rows), dpi=90)
    grid = fig.add_gridspec(
        rows * 2,
        cols,
        height_ratios=[2.0, 1.0] * rows,
        hspace=0.12,
        wspace=0.06,
        left=0.01,
        right=0.99,
        top=0.97,
        bottom=0.01,
    )
    color = {True: _RIGHT, False: _WRONG, None: _UNKNOWN}
    mark = {True: "\u2713", False: "\u2717", None: "?"}
    columns = [("model", p)] + ([("baseline", baseline)] if baseline is not None else [])
    for n, (image, i) in enumerate(zip(images, indices)):
        r, c = divmod(n, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        ax.imshow(image, interpolation="nearest")
        kind, present = _present(p, i)
        names = ", ".join(class_names[j] for j in present) or "none"
        ax.set_title(_clip(f"{p['id'][i].decode('utf-8', 'replace')} | {kind}: {names}", 44), fontsize=7)
        ax.axis("off")
        text = fig.add_subplot(grid[2 * r + 1, c])
        text.axis("off")
        for j, (label, preds) in enumerate(columns):
            x = j / len(columns)
            text.text(x, 1.0, label, fontsize=7, fontweight="bold", va="top", transform=text.transAxes)
            for line, (cls, score, right) in enumerate(top_k_judged(preds, i, k)):
                text.text(
                    x,
                    0.84 - 0.16 * line,
                    f"{mark[right]} {score:.2f} {_clip(class_names[cls], 18)}",
                    fontsize=7,
                    color=color[right],
                    va="top",
                    transform=text.transAxes,
                )
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(pixels: np.ndarray, path: str) -> None:
    Image.fromarray(pixels).save(path, format="PNG")


# === TensorBoard ===
def write_tensorboard(
    logdir: str,
    step: int,
    scalars: dict[str, float],
    curves: dict[str, np.ndarray],
    examples: Optional[np.ndarray] = None,
) -> None:
    """Writes an evaluation's scalars, PR curves and examples image at `step`.

    PR curves are tensor summaries [6, T] tagged `pr_curves/NAME` with the
    `pr_curves` plugin's metadata, which TensorBoard's PR-curve dashboard
    reads. The event files of an earlier evaluation into `logdir` are
    replaced.
    """
    os.makedirs(logdir, exist_ok=True)
    for old in glob.glob(os.path.join(logdir, f"events.out.tfevents.*{EVENTS_SUFFIX}")):
        os.remove(old)
    writer = tf.summary.create_file_writer(logdir, filename_suffix=EVENTS_SUFFIX)
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            if value is not None and np.isfinite(value):
                tf.summary.scalar(tag, value)
        for name, data in curves.items():
            meta = pr_metadata.create_summary_metadata(
                display_name=name,
                description="Class-agnostic precision-recall over the verified entries "
                + ("of all classes" if name == "all" else f"of the classes of category {name!r}"),
                num_thresholds=int(data.shape[1]),
            )
            tf.summary.write(f"pr_curves/{name}", tf.constant(data, tf.float32), metadata=meta.SerializeToString())
        if examples is not None:
            tf.summary.image("examples", examples[None], max_outputs=1)
    writer.close()
