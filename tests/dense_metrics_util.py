"""The dense metrics as they were before `metrics.VerifiedEntries`: the oracle the entries path must equal exactly.

A frozen copy of `nlr_tf/metrics.py`'s [N, d] implementation (per-class AP,
APall, top-1); `tests/test_metrics.py` checks that the library's entries
form gives the very same floats on random cases. Its original docstring:

The papers' metrics: per-class AP, mAP, class-agnostic APall, top-1.

AP of a class ranks the images by score and averages the precision at the
rank of each positive (Veit Eq. 4, Hu Eq. 8); tied scores form one
threshold, as in `sklearn.metrics.average_precision_score`:
`AP = sum_n (R_n - R_{n-1}) P_n` over the distinct scores. Only verified
entries count (`mask` = 1): an unverified class of an image is neither a
positive nor a negative, as Veit evaluates Open Images. A class with no
verified positive has no AP: it is reported (NaN), counted, and left out of
the mean.

Fast: with ties as one threshold, `AP = mean over positives p of
#positives(score >= s_p) / #counted(score >= s_p)`, so a class needs one
sort of its counted scores only (compacted first; float32, numpy's
vectorised sort), a sort of its positives, and a binary search per distinct
positive score: no labels carried through the sort, no per-threshold
arrays. Chunks of classes (bounded memory, about 100 MB of buffers per
thread) are copied class-major in blocks of rows that stay in cache, and run
on parallel threads (numpy releases the GIL in copies, sorts and
searches). APall sorts the counted scores of all classes, one part per
thread (4 bytes per counted entry).
"""

import concurrent.futures
import dataclasses
import os
import threading
from typing import Optional

import numpy as np

_CHUNK_ENTRIES = 1 << 24  # entries per chunk of classes: about 100 MB of buffers per thread
_BLOCK_ENTRIES = 1 << 16  # entries copied class-major at a time: a block stays in cache
_PARALLEL_ENTRIES = 1 << 20  # fewer entries than this run on the calling thread
_THREADS = min(4, os.cpu_count() or 1)


def _thresholds(positive: np.ndarray):
    """The distinct scores of sorted positive scores, `#positives(score >= t)` and `#positives(score == t)` of each.

    The counts of equal scores are None when there are no ties.
    """
    if positive.size > 1:
        new = positive[1:] != positive[:-1]
        if not new.all():
            starts = np.flatnonzero(new)
            starts += 1
            starts = np.concatenate(([0], starts))
            return positive[starts], positive.size - starts, np.diff(starts, append=positive.size)
    return positive, np.arange(positive.size, 0, -1), None


def _ap(at_least_pos: np.ndarray, tied: Optional[np.ndarray], at_least_all: np.ndarray) -> float:
    """AP from the thresholds of `_thresholds` and `#counted(score >= t)` of each threshold t.

    Every positive is judged by the precision at its score, the end of its
    run of tied scores: `#positives(score >= t) / #counted(score >= t)`.
    """
    ratio = at_least_pos / at_least_all
    if tied is not None:
        ratio *= tied
    return float(ratio.sum() / at_least_pos[0])


class _Buffers(threading.local):
    """One thread's class-major arrays, reused across chunks (no page faults per chunk)."""

    def get(self, k: int, n: int):
        if getattr(self, "shape", None) != (k, n):
            self.shape = (k, n)
            self.keys = np.empty((k, n), np.float32)  # scores, class-major
            self.positive = np.empty((k, n), bool)  # labels > 0, class-major
            self.counted = np.empty((k, n), bool)  # mask > 0, class-major
            self.is_pos = np.empty(n, bool)
            self.kept = np.empty(n, np.float32)
        return self


def _ap_chunk(scores, labels, mask, start: int, stop: int, step: int, buffers: _Buffers) -> np.ndarray:
    """AP of classes `start:stop` of [n, d] arrays (any dtype: scores are cast to float32)."""
    n, k = scores.shape[0], stop - start
    buf = buffers.get(step, n)
    keys, positive, counted = buf.keys[:k], buf.positive[:k], buf.counted[:k]
    # Class-major copies, block of rows by block of rows: a block is read once
    # from memory (its rows' slices of the chunk's columns) and written
    # transposed while it stays in cache; the comparisons write transposed.
    rows = int(np.clip(_BLOCK_ENTRIES // step, 16, 1024))
    for r in range(0, n, rows):
        e = min(n, r + rows)
        keys[:, r:e] = scores[r:e, start:stop].T
        np.greater(labels[r:e, start:stop].T, 0, out=positive[:, r:e])
        if mask is not None:
            np.greater(mask[r:e, start:stop].T, 0, out=counted[:, r:e])
    out = np.full(k, np.nan)
    for j in range(k):
        is_pos = positive[j] if mask is None else np.logical_and(positive[j], counted[j], out=buf.is_pos)
        pos = np.compress(is_pos, keys[j])
        if not pos.size:
            continue
        pos.sort()
        if mask is None:
            kept = keys[j]
        else:
            kept = np.compress(counted[j], keys[j], out=buf.kept[: np.count_nonzero(counted[j])])
        kept.sort()
        levels, at_least_pos, tied = _thresholds(pos)
        out[j] = _ap(at_least_pos, tied, kept.size - np.searchsorted(kept, levels, side="left"))
    return out


def _check(scores, labels, mask):
    if np.shape(scores) != np.shape(labels) or np.ndim(labels) != 2:
        raise ValueError(f"scores and labels must both be [N, d]; got {np.shape(scores)} and {np.shape(labels)}")
    if mask is not None and np.shape(mask) != np.shape(labels):
        raise ValueError(f"mask must be [N, d] like labels; got {np.shape(mask)}")


def average_precision(scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-class AP.

    Args:
        scores: float [N, d]. Higher means more likely present (finite).
            Compared as float32.
        labels: {0, 1} [N, d]. Ground truth.
        mask: {0, 1} [N, d] or None. 1 where the entry is verified (counts).

    Returns:
        float64 [d]: AP per class, NaN for a class without a counted positive.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    mask = None if mask is None else np.asarray(mask)
    _check(scores, labels, mask)
    n, d = scores.shape
    # Chunks of at most _CHUNK_ENTRIES entries, in whole rounds of threads
    # when there is enough work to share.
    chunks = -(-d // max(1, _CHUNK_ENTRIES // max(n, 1)))
    if n * d >= _PARALLEL_ENTRIES:
        chunks = -(-chunks // _THREADS) * _THREADS
    step = max(1, -(-d // max(1, min(chunks, d))))
    buffers = _Buffers()

    def chunk(start: int) -> np.ndarray:
        return _ap_chunk(scores, labels, mask, start, min(d, start + step), step, buffers)

    starts = range(0, d, step)
    if len(starts) <= 1 or _THREADS == 1:
        return np.concatenate([chunk(s) for s in starts]) if d else np.full(0, np.nan)
    with concurrent.futures.ThreadPoolExecutor(min(_THREADS, len(starts))) as pool:
        return np.concatenate(list(pool.map(chunk, starts)))


def _count_below(kept: np.ndarray, values: np.ndarray, block: int = 8192) -> np.ndarray:
    """`np.searchsorted(kept, values, "left")` for sorted `values` in a large sorted `kept`.

    Each run of values falls in one block of `kept` and is searched there, in
    cache: about twice as fast as the binary searches over the whole array.
    """
    if kept.size <= block:
        return np.searchsorted(kept, values, side="left")
    # Block b holds the values in (kept[b * block], kept[(b + 1) * block]].
    cuts = np.concatenate(([0], np.searchsorted(values, kept[block::block], side="right"), [values.size]))
    out = np.empty(values.size, np.intp)
    for b in np.flatnonzero(cuts[1:] > cuts[:-1]):
        lo, hi, first = cuts[b], cuts[b + 1], b * block
        out[lo:hi] = np.searchsorted(kept[first : first + block], values[lo:hi], side="left")
        out[lo:hi] += first
    return out


def _verified(scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray], start: int, stop: int):
    """Sorted counted scores and counted positive scores of flat entries `start:stop`."""
    step = _BLOCK_ENTRIES * 16
    positive, counted = np.empty((2, min(stop - start, step)), bool)
    # Room for every entry; pages past the counted ones are never touched, so
    # never take memory.
    kept = np.empty(stop - start, np.float32)
    positives, filled = [], 0
    for a in range(start, stop, step):
        b = min(stop, a + step)
        block = np.asarray(scores[a:b], np.float32)
        pos = np.greater(labels[a:b], 0, out=positive[: b - a])
        if mask is None:
            kept[a - start : b - start] = block
            filled = b - start
        else:
            ver = np.greater(mask[a:b], 0, out=counted[: b - a])
            np.logical_and(pos, ver, out=pos)
            size = int(np.count_nonzero(ver))
            np.compress(ver, block, out=kept[filled : filled + size])
            filled += size
        positives.append(np.compress(pos, block))
    kept = kept[:filled]
    kept.sort()
    return kept, np.concatenate(positives)


def ap_all(scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Class-agnostic AP: every counted (image, class) entry in one ranking.

    The counted scores (4 bytes each) are split in as many parts as threads,
    each part sorted and searched on its own thread.
    """
    scores, labels = np.asarray(scores).reshape(-1), np.asarray(labels).reshape(-1)
    mask = None if mask is None else np.asarray(mask).reshape(-1)
    size = scores.size
    bounds = np.linspace(0, size, min(_THREADS, max(1, size // _CHUNK_ENTRIES)) + 1).astype(int)
    with concurrent.futures.ThreadPoolExecutor(len(bounds) - 1) as pool:
        parts = list(
            pool.map(lambda i: _verified(scores, labels, mask, bounds[i], bounds[i + 1]), range(len(bounds) - 1))
        )
        positive = np.concatenate([p for _, p in parts])
        if not positive.size:
            return float("nan")
        positive.sort()
        levels, at_least_pos, tied = _thresholds(positive)
        at_least_all = sum(pool.map(lambda part: part[0].size - _count_below(part[0], levels), parts))
    return _ap(at_least_pos, tied, at_least_all)


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


def mean_of_defined(per_class_ap: np.ndarray) -> float:
    """mAP: the mean of the per-class APs that are defined (a class without a counted positive is left out)."""
    defined = ~np.isnan(per_class_ap)
    return float(np.mean(per_class_ap[defined])) if defined.any() else float("nan")


def metric(name: str, scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """One of `evaluate`'s headline metrics ("mAP", "APall", "top1"), computed alone."""
    if name == "mAP":
        return mean_of_defined(average_precision(scores, labels, mask))
    if name == "APall":
        return ap_all(scores, labels, mask)
    if name == "top1":
        return top1_accuracy(scores, labels, mask)
    raise ValueError(f"unknown metric {name!r}: mAP, APall or top1")


def evaluate(scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> Report:
    """All the papers' metrics of `scores` against verified `labels`."""
    per_class = average_precision(scores, labels, mask)
    defined = ~np.isnan(per_class)
    return Report(
        per_class_ap=per_class,
        map=mean_of_defined(per_class),
        ap_all=ap_all(scores, labels, mask),
        top1=top1_accuracy(scores, labels, mask),
        classes_without_positives=int((~defined).sum()),
    )
