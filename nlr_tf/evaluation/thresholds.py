"""Per-class decision thresholds of a deployable model, chosen on verified labels (`val`).

A class is predicted when its score is at least its threshold. Each class's
threshold is chosen among the distinct scores of its counted (verified)
entries: the one with the best F1, or, with a target precision P, the
lowest one whose precision is at least P (the most recall at that
precision). Unverified entries count neither way, as in every metric
(`nlr_tf.metrics`). The value written is halfway between the chosen score
and the next lower distinct score, so the same images scored again (in a
served graph, with float round-off) fall on the same side of it. Classes
are read from the verified entries (`metrics.VerifiedEntries`, scores as
float32), never from [N, d] arrays.

A class that cannot be chosen for (no verified positive, or P not reached
at any threshold) gets an infinite threshold: it is never predicted, and
the choice says why.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from nlr_tf.metrics import VerifiedEntries

NEVER = math.inf  # the threshold of a class that is never predicted
BEST_F1 = "best F1"


@dataclasses.dataclass
class Thresholds:
    """Per-class thresholds and what each gave on the split it was chosen on.

    Args:
        values: float [d]. A class is predicted where score >= its value.
        rule: str. "best F1" or "precision >= P".
        precision, recall, f1: float [d]. On the chosen split's verified
            entries at `values` (NaN where the class is never predicted).
        positives: int [d]. Verified positives of each class on that split.
        why_never: dict of int -> str. The classes never predicted, and why.
    """

    values: np.ndarray
    rule: str
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    positives: np.ndarray
    why_never: dict[int, str]

    def as_dict(self, class_names: Sequence[str], split: str) -> dict[str, Any]:
        """The JSON form (thresholds.json): one entry per class, infinite thresholds as null."""

        def number(x):
            return None if not math.isfinite(x) else float(x)

        return {
            "rule": self.rule,
            "split": split,
            "predicted_when": "score >= threshold; null: never predicted",
            "classes": [
                {
                    "name": name,
                    "threshold": number(self.values[j]),
                    "precision": number(self.precision[j]),
                    "recall": number(self.recall[j]),
                    "f1": number(self.f1[j]),
                    "verified_positives": int(self.positives[j]),
                    **({"never_predicted": self.why_never[j]} if j in self.why_never else {}),
                }
                for j, name in enumerate(class_names)
            ],
        }


def _cut_points(s: np.ndarray, y: np.ndarray):
    """Distinct scores in descending order, with #positives and #entries at or above each."""
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_run = np.append(s[1:] != s[:-1], True)  # the last entry of each run of equal scores
    tp = np.cumsum(y)[last_of_run]
    predicted = np.flatnonzero(last_of_run) + 1
    return s[last_of_run], tp, predicted


def choose_thresholds(
    scores: Union[np.ndarray, VerifiedEntries],
    labels: Optional[np.ndarray] = None,
    mask: Optional[np.ndarray] = None,
    *,
    target_precision: Optional[float] = None,
) -> Thresholds:
    """Chooses one threshold per class on verified entries (see the module docstring).

    Args:
        scores: float [N, d]. The model's scores (compared as float32); or
            `VerifiedEntries` (then no labels or mask).
        labels: {0, 1} [N, d]. Verified labels.
        mask: {0, 1} [N, d] or None. 1 where an entry is verified.
        target_precision: float in (0, 1] or None. None: the best F1 per class.
    """
    if target_precision is not None and not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if isinstance(scores, VerifiedEntries):
        if labels is not None or mask is not None:
            raise ValueError("VerifiedEntries carry their labels: pass no labels or mask with them")
        entries = scores
    else:
        if np.shape(scores) != np.shape(labels) or (mask is not None and np.shape(mask) != np.shape(scores)):
            raise ValueError(
                f"scores {np.shape(scores)}, labels {np.shape(labels)} and mask {np.shape(mask)} differ in shape"
            )
        entries = VerifiedEntries.from_dense(scores, labels, mask)
    d, starts = entries.num_classes, entries.class_starts
    values = np.full(d, NEVER)
    precision, recall, f1 = (np.full(d, np.nan) for _ in range(3))
    positives = np.zeros(d, np.int64)
    why_never = {}
    for j in range(d):
        s = entries.scores[starts[j] : starts[j + 1]].astype(np.float64)
        y = entries.labels[starts[j] : starts[j + 1]]
        positives[j] = n_pos = int(y.sum())
        if n_pos == 0:
            why_never[j] = "no verified positive on the split"
            continue
        cut, tp, predicted = _cut_points(s, y)
        p, r, f = tp / predicted, tp / n_pos, 2 * tp / (predicted + n_pos)
        if target_precision is None:
            best = int(np.argmax(f))  # the highest threshold among equal F1s
        else:
            reach = np.flatnonzero(p >= target_precision - 1e-12)
            if not reach.size:
                why_never[j] = f"precision {target_precision:g} not reached at any threshold (best {p.max():.3f})"
                continue
            best = int(reach[-1])  # the lowest threshold that reaches it: the most recall
        if best + 1 < len(cut):
            values[j] = (cut[best] + cut[best + 1]) / 2
        else:  # every counted entry predicted: below the lowest score
            values[j] = cut[best] - (0.5 * (cut[best - 1] - cut[best]) if best else 0.5)
        precision[j], recall[j], f1[j] = p[best], r[best], f[best]
    rule = BEST_F1 if target_precision is None else f"precision >= {target_precision:g}"
    return Thresholds(values, rule, precision, recall, f1, positives, why_never)


def predicted_labels(scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """{0, 1} [N, d]: 1 where a score is at least its class's threshold."""
    return (np.asarray(scores) >= np.asarray(values)[None, :]).astype(np.int32)


def precision_recall_f1(
    predicted: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 of {0, 1} predictions on verified entries (NaN where undefined)."""
    counted = np.ones_like(predicted, bool) if mask is None else np.asarray(mask) > 0
    predicted, positive = (np.asarray(predicted) > 0) & counted, (np.asarray(labels) > 0) & counted
    tp = (predicted & positive).sum(0).astype(np.float64)
    n_pred, n_pos = predicted.sum(0), positive.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / n_pred, tp / n_pos, 2 * tp / (n_pred + n_pos)
