"""The papers' metrics: per-class AP, mAP, class-agnostic APall, top-1.

AP of a class ranks the images by score and averages the precision at the
rank of each positive (Veit Eq. 4, Hu Eq. 8); tied scores form one
threshold, as in `sklearn.metrics.average_precision_score`:
`AP = sum_n (R_n - R_{n-1}) P_n` over the distinct scores. Only verified
entries count (`mask` = 1): an unverified class of an image is neither a
positive nor a negative, as Veit evaluates Open Images. A class with no
verified positive has no AP: it is reported (NaN), counted, and left out of
the mean.

Fast: one sort per class of the counted scores, then counts by binary
search; chunks of classes (bounded memory) run on parallel threads.
"""

import concurrent.futures
import dataclasses
import os
from typing import Optional

import numpy as np

_SINK = 3e38  # scores must be above -1e38 (they are probabilities here)
_CHUNK_ENTRIES = 1 << 23  # entries per chunk of classes (32 MB per float32 array)


def _transpose(a: np.ndarray, block: int = 512) -> np.ndarray:
    """`a.T` made contiguous, copied in blocks of rows that stay in cache (several times faster)."""
    if a.shape[1] == 1:
        return a.reshape(1, -1).copy()
    out = np.empty(a.shape[::-1], a.dtype)
    for r in range(0, a.shape[0], block):
        out[:, r : r + block] = a[r : r + block].T
    return out


def _ap_columns(scores: np.ndarray, positive: np.ndarray, counted: Optional[np.ndarray]) -> np.ndarray:
    """AP of each column of [n, k] arrays; `counted` False leaves an entry out.

    With ties as one threshold, `AP = mean over positives p of
    #positives(score >= s_p) / #counted(score >= s_p)`: each positive is
    judged by the precision at the end of its run of tied scores. Counting
    needs one sort of each class's scores and binary searches, not a sort
    that carries the labels along.
    """
    n, k = scores.shape
    if counted is not None:
        # Uncounted entries sink to about -3e38, below every score, so they
        # never reach a threshold. Arithmetic, not np.where: no branches on
        # a random mask (several times faster).
        scores = scores + (counted.view(np.uint8).astype(np.float32) - np.float32(1.0)) * np.float32(_SINK)
    keys = _transpose(scores)
    keys.sort(axis=1)
    if counted is not None:
        positive = positive & counted
    row, cls = np.nonzero(positive)
    by_class = np.argsort(cls, kind="stable")
    groups = np.split(scores[row[by_class], cls[by_class]], np.cumsum(np.bincount(cls, minlength=k))[:-1])
    out = np.full(k, np.nan)
    for j, pos in enumerate(groups):
        if pos.size:
            pos.sort()
            at_least_all = n - np.searchsorted(keys[j], pos, side="left")
            at_least_pos = pos.size - np.searchsorted(pos, pos, side="left")
            out[j] = np.mean(at_least_pos / at_least_all)
    return out


def average_precision(scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-class AP.

    Args:
        scores: float [N, d]. Higher means more likely present (finite).
        labels: {0, 1} [N, d]. Ground truth.
        mask: {0, 1} [N, d] or None. 1 where the entry is verified (counts).

    Returns:
        float64 [d]: AP per class, NaN for a class without a counted positive.
    """
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores and labels must both be [N, d]; got {scores.shape} and {labels.shape}")
    if mask is not None and np.shape(mask) != labels.shape:
        raise ValueError(f"mask must be [N, d] like labels; got {np.shape(mask)}")
    n, d = scores.shape
    step = max(1, _CHUNK_ENTRIES // max(n, 1))

    def chunk(start: int) -> np.ndarray:
        cols = slice(start, start + step)
        counted = None if mask is None else np.asarray(mask)[:, cols] > 0
        return _ap_columns(scores[:, cols], labels[:, cols] > 0, counted)

    # numpy sorts and copies release the GIL: chunks of classes in parallel.
    with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        return np.concatenate(list(pool.map(chunk, range(0, d, step))))


def ap_all(scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Class-agnostic AP: every counted (image, class) entry in one ranking."""
    scores = np.asarray(scores, np.float32).reshape(-1, 1)
    counted = None if mask is None else np.asarray(mask).reshape(-1, 1) > 0
    return float(_ap_columns(scores, np.asarray(labels).reshape(-1, 1) > 0, counted)[0])


def top1_accuracy(scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Share of images whose highest-scoring class is a (verified) positive.

    Images without a counted positive are left out.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels) * (1 if mask is None else np.asarray(mask))
    has = labels.sum(axis=1) > 0
    if not has.any():
        return float("nan")
    top = np.argmax(scores[has], axis=1)
    return float(np.mean(labels[has][np.arange(top.size), top] > 0))


@dataclasses.dataclass
class Report:
    """mAP, APall, top-1 and per-class AP of one evaluation.

    Args:
        per_class_ap: float [d], NaN where a class has no counted positive.
        map: float. Mean of the defined per-class APs.
        ap_all: float. Class-agnostic AP.
        top1: float. Top-1 accuracy (single-label data; NaN if undefined).
        classes_without_positives: int. Classes left out of the mean.
    """

    per_class_ap: np.ndarray
    map: float
    ap_all: float
    top1: float
    classes_without_positives: int

    def as_dict(self, class_names=None) -> dict:
        names = class_names or [str(i) for i in range(len(self.per_class_ap))]
        return {
            "mAP": self.map,
            "APall": self.ap_all,
            "top1": self.top1,
            "classes_without_positives": self.classes_without_positives,
            "per_class_AP": {n: (None if np.isnan(a) else float(a)) for n, a in zip(names, self.per_class_ap)},
        }


def evaluate(scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> Report:
    """All the papers' metrics of `scores` against verified `labels`."""
    per_class = average_precision(scores, labels, mask)
    defined = ~np.isnan(per_class)
    return Report(
        per_class_ap=per_class,
        map=float(np.mean(per_class[defined])) if defined.any() else float("nan"),
        ap_all=ap_all(scores, labels, mask),
        top1=top1_accuracy(scores, labels, mask),
        classes_without_positives=int((~defined).sum()),
    )
