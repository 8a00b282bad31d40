"""Gain over a baseline binned by a class statistic (Veit Fig. 5), and the statistics (Veit Fig. 4).

Classes are sorted by how many noisy annotations they have in the training
set, or by the share of those that are correct, cut into 10 groups of
near-equal size; per group the mean AP of the model and of a baseline and
their difference. AP itself comes from `nlr_tf.metrics`.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure

from nlr_tf.data import schema
from nlr_tf.data.label_stats import split_stats
from nlr_tf.data.schema import DatasetInfo
from nlr_tf.evaluation import plotting

NUM_GROUPS = 10


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
    ax.bar(range(len(groups)), gains, color=[plotting.RIGHT if v >= 0 else plotting.WRONG for v in gains])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(groups)), [_range_text(g, percent_range) for g in groups], rotation=30, ha="right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean AP gain over baseline (points)")
    ax.set_title(title, fontsize=10)
    plotting.save_figure(fig, path)
