"""The papers' metrics: per-class AP, mAP, class-agnostic APall, top-1.

AP of a class ranks the images by score and averages the precision at the
rank of each positive (Veit Eq. 4, Hu Eq. 8); tied scores form one
threshold, as in `sklearn.metrics.average_precision_score`:
`AP = sum_n (R_n - R_{n-1}) P_n` over the distinct scores. Only verified
entries count (`mask` = 1): an unverified class of an image is neither a
positive nor a negative, as Veit evaluates Open Images. A class with no
verified positive has no AP: it is reported (NaN), counted, and left out of
the mean.

Every metric is computed from `VerifiedEntries`: the verified entries only
(row, label, score, grouped by class) and each image's top class, so an
evaluation with Open Images' thousands of classes holds O(verified entries +
images), never [N, d] arrays; the dense functions' arguments are turned into
entries first (one implementation of each metric).

Fast: with ties as one threshold, `AP = mean over positives p of
#positives(score >= s_p) / #counted(score >= s_p)`, so a class needs one
sort of its counted scores only (float32, numpy's vectorised sort), a sort
of its positives, and a binary search per distinct positive score: no
labels carried through the sort, no per-threshold arrays. Dense arrays are
turned into entries by chunks of classes copied class-major in blocks of
rows that stay in cache (a sparse mask: read row-major, then a radix sort of
the class ids); classes run on parallel threads (numpy releases the GIL in
copies, sorts and searches). APall sorts the counted scores, one part per
thread (4 bytes per counted entry).
"""

import concurrent.futures
import dataclasses
import os
import threading
from typing import Optional, Union

import numpy as np

_CHUNK_ENTRIES = 1 << 24  # dense entries per chunk of classes (about 100 MB of buffers per thread); APall part
_BLOCK_ENTRIES = 1 << 16  # entries copied class-major at a time: a block stays in cache
_SPARSE = 8  # a mask verifying fewer than 1 in this many entries is read row-major
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
        return self


def _class_major(scores, labels, mask, start: int, stop: int, step: int, buffers: _Buffers, out, offsets, every_row):
    """Writes the verified entries of classes `start:stop` of [n, d] arrays to `out` (rows, labels, scores) at
    `offsets` (any dtype: scores are cast to float32)."""
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
    for j in range(k):
        kept = slice(offsets[start + j], offsets[start + j + 1])
        if mask is None:
            out[0][kept], out[1][kept], out[2][kept] = every_row, positive[j], keys[j]
        else:
            for source, target in zip((every_row, positive[j], keys[j]), out):
                np.compress(counted[j], source, out=target[kept])


@dataclasses.dataclass(eq=False)
class VerifiedEntries:
    """The verified entries of an evaluation: all the metrics read, in O(verified entries + images) memory.

    Every metric counts verified (image, class) entries only, and Open Images
    verifies a few of its thousands of classes per image. So for the
    verified entries only: their image (row), label and score, grouped by
    class (class c's are `class_starts[c]:class_starts[c + 1]`, by row within
    a class); and per image what top-1 needs of its full score vector, its
    highest-scoring class and whether that class is a verified positive.
    Build them with `from_dense` from [N, d] arrays, or batch by batch
    (`from_dense` of each batch, then `concatenate`); `take` draws images
    (with repeats, for a bootstrap).

    Args:
        rows: int32 [E]. The image of each verified entry.
        labels: bool [E]. Whether it is a verified positive.
        scores: float32 [E]. Its score.
        class_starts: int64 [d + 1]. Where each class's entries start.
        top_class: int32 [N]. Each image's highest-scoring class (the first
            on ties), verified or not.
        top_positive: bool [N]. Whether that class is a verified positive.
    """

    rows: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    class_starts: np.ndarray
    top_class: np.ndarray
    top_positive: np.ndarray

    _ARRAYS = ("rows", "labels", "scores", "class_starts", "top_class", "top_positive")
    _DTYPES = (np.int32, bool, np.float32, np.int64, np.int32, bool)

    @property
    def num_rows(self) -> int:
        return int(self.top_class.size)

    @property
    def num_classes(self) -> int:
        return int(self.class_starts.size - 1)

    @property
    def classes(self) -> np.ndarray:
        """int32 [E]: the class of each entry."""
        return np.repeat(np.arange(self.num_classes, dtype=np.int32), np.diff(self.class_starts))

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(getattr(self, k).nbytes for k in self._ARRAYS)

    def __eq__(self, other) -> bool:
        if not isinstance(other, VerifiedEntries):
            return NotImplemented
        return all(np.array_equal(getattr(self, k), getattr(other, k)) for k in self._ARRAYS)

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The arrays (what `from_arrays` reads back; an npz file's contents, say)."""
        return {k: getattr(self, k) for k in self._ARRAYS}

    @classmethod
    def from_arrays(cls, arrays) -> "VerifiedEntries":
        """The entries `as_arrays` gave."""
        return cls(**{k: np.asarray(arrays[k], dtype) for k, dtype in zip(cls._ARRAYS, cls._DTYPES)})

    @classmethod
    def _from_entries(cls, rows, classes, labels, scores, top_class, top_positive, num_classes) -> "VerifiedEntries":
        """Entries in any order, grouped by class (a stable sort: rows keep their order within a class)."""
        counts = np.bincount(classes, minlength=num_classes)
        if np.any(classes[1:] < classes[:-1]):
            # A stable sort of 16-bit class ids is a radix sort.
            order = np.argsort(classes.astype(np.uint16) if num_classes <= 1 << 16 else classes, kind="stable")
            rows, labels, scores = rows[order], labels[order], scores[order]
        starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        return cls(rows.astype(np.int32), labels, scores, starts, top_class, top_positive)

    @classmethod
    def from_dense(cls, scores: np.ndarray, labels: np.ndarray, mask: Optional[np.ndarray] = None) -> "VerifiedEntries":
        """The entries of [N, d] arrays.

        Args:
            scores: float [N, d]. Higher means more likely present (finite).
                Kept as float32 (the top class is the argmax of `scores` as
                given).
            labels: {0, 1} [N, d]. Ground truth.
            mask: {0, 1} [N, d] or None. 1 where the entry is verified
                (None: every entry is).
        """
        scores, labels = np.asarray(scores), np.asarray(labels)
        mask = None if mask is None else np.asarray(mask)
        _check(scores, labels, mask)
        n, d = scores.shape
        # Where each class's entries go: counted in blocks of rows.
        counts = np.full(d, n, np.int64)
        if mask is not None:
            counts[:] = 0
            rows = max(1, _CHUNK_ENTRIES // max(d, 1))
            for r in range(0, n, rows):
                counts += np.count_nonzero(mask[r : r + rows] > 0, axis=0)
        if d:
            top = np.argmax(scores, axis=1)
            every_row = np.arange(n)
            top_positive = labels[every_row, top] > 0
            if mask is not None:
                top_positive &= mask[every_row, top] > 0
        else:
            top, top_positive = np.zeros(n, np.int32), np.zeros(n, bool)
        top = top.astype(np.int32)
        if mask is not None and counts.sum() * _SPARSE < n * d:
            return cls._from_sparse(scores, labels, mask, top, top_positive)
        offsets = np.concatenate(([0], np.cumsum(counts)))
        out = (np.empty(offsets[-1], np.int32), np.empty(offsets[-1], bool), np.empty(offsets[-1], np.float32))
        # Chunks of at most _CHUNK_ENTRIES entries, in whole rounds of threads when there is enough work to share.
        chunks = -(-d // max(1, _CHUNK_ENTRIES // max(n, 1)))
        if n * d >= _PARALLEL_ENTRIES:
            chunks = -(-chunks // _THREADS) * _THREADS
        step = max(1, -(-d // max(1, min(chunks, d))))
        buffers, every_row = _Buffers(), np.arange(n, dtype=np.int32)

        def chunk(start: int) -> None:
            _class_major(scores, labels, mask, start, min(d, start + step), step, buffers, out, offsets, every_row)

        starts = range(0, d, step)
        if len(starts) <= 1 or _THREADS == 1:
            for start in starts:
                chunk(start)
        else:
            with concurrent.futures.ThreadPoolExecutor(min(_THREADS, len(starts))) as pool:
                list(pool.map(chunk, starts))
        return cls(out[0], out[1], out[2], offsets.astype(np.int64), top, top_positive)

    @classmethod
    def _from_sparse(cls, scores, labels, mask, top, top_positive) -> "VerifiedEntries":
        """`from_dense` of a sparse mask: the verified entries found row-major (blocks of rows), then grouped."""
        n, d = scores.shape
        step = max(1, _CHUNK_ENTRIES // d)
        parts = []
        for r in range(0, n, step):
            flat = np.flatnonzero(mask[r : r + step] > 0)
            rows, classes = np.divmod(flat, d)
            labels_ = np.asarray(labels[r : r + step]).reshape(-1)[flat] > 0
            scores_ = np.asarray(np.asarray(scores[r : r + step]).reshape(-1)[flat], np.float32)
            parts.append((rows + r, classes, labels_, scores_))
        rows, classes, labels_, scores_ = (np.concatenate([p[i] for p in parts]) for i in range(4))
        return cls._from_entries(rows, classes, labels_, scores_, top, top_positive, d)

    @classmethod
    def concatenate(cls, parts) -> "VerifiedEntries":
        """The entries of the images of `parts`, one after the other (rows renumbered)."""
        parts = list(parts)
        if not parts or any(p.num_classes != parts[0].num_classes for p in parts):
            raise ValueError(f"entries to concatenate need one class count; got {[p.num_classes for p in parts]}")
        offsets = np.cumsum([0] + [p.num_rows for p in parts[:-1]])
        joined = {k: np.concatenate([getattr(p, k) for p in parts]) for k in ("labels", "scores", "classes")}
        joined.update({k: np.concatenate([getattr(p, k) for p in parts]) for k in ("top_class", "top_positive")})
        rows = np.concatenate([p.rows + np.int32(o) for p, o in zip(parts, offsets)])
        return cls._from_entries(rows, **joined, num_classes=parts[0].num_classes)

    def take(self, index) -> "VerifiedEntries":
        """The entries of images `index` (repeats allowed), as images 0 ... len(index) - 1."""
        index = np.asarray(index, np.intp)
        by_row = np.argsort(self.rows, kind="stable")
        counts = np.bincount(self.rows, minlength=self.num_rows)
        drawn = counts[index]
        # Entry k of drawn image i is entry k of image index[i] (in row order): its first entry, plus k.
        positions = np.repeat(np.cumsum(counts)[index] - np.cumsum(drawn), drawn)
        positions += np.arange(positions.size)
        positions = by_row[positions]
        return self._from_entries(
            rows=np.repeat(np.arange(index.size, dtype=np.int32), drawn),
            classes=self.classes[positions],
            labels=self.labels[positions],
            scores=self.scores[positions],
            top_class=self.top_class[index],
            top_positive=self.top_positive[index],
            num_classes=self.num_classes,
        )


Scored = Union[np.ndarray, VerifiedEntries]


def _entries(scores: Scored, labels, mask) -> VerifiedEntries:
    """The entries to evaluate: `scores` itself, or those of dense arrays."""
    if isinstance(scores, VerifiedEntries):
        if labels is not None or mask is not None:
            raise ValueError("VerifiedEntries carry their labels: pass no labels or mask with them")
        return scores
    if labels is None:
        raise ValueError(f"scores of shape {np.shape(scores)} need labels [N, d]")
    return VerifiedEntries.from_dense(scores, labels, mask)


def _check(scores, labels, mask):
    if np.shape(scores) != np.shape(labels) or np.ndim(labels) != 2:
        raise ValueError(f"scores and labels must both be [N, d]; got {np.shape(scores)} and {np.shape(labels)}")
    if mask is not None and np.shape(mask) != np.shape(labels):
        raise ValueError(f"mask must be [N, d] like labels; got {np.shape(mask)}")


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


def _class_ap(scores: np.ndarray, positive: np.ndarray, starts: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """AP of each of `classes` (each with a positive), from entries grouped by class starting at `starts`."""
    out = np.empty(classes.size)
    for i, j in enumerate(classes):
        s = scores[starts[j] : starts[j + 1]]
        pos = np.compress(positive[starts[j] : starts[j + 1]], s)
        pos.sort()
        kept = np.sort(s)
        levels, at_least_pos, tied = _thresholds(pos)
        out[i] = _ap(at_least_pos, tied, kept.size - np.searchsorted(kept, levels, side="left"))
    return out


def average_precision(scores: Scored, labels: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None):
    """Per-class AP.

    Args:
        scores: float [N, d], higher means more likely present (finite;
            compared as float32); or `VerifiedEntries` (then no labels or
            mask).
        labels: {0, 1} [N, d]. Ground truth.
        mask: {0, 1} [N, d] or None. 1 where the entry is verified (counts).

    Returns:
        float64 [d]: AP per class, NaN for a class without a counted positive.
    """
    entries = _entries(scores, labels, mask)
    d = entries.num_classes
    out = np.full(d, np.nan)
    starts = entries.class_starts
    with_positive = np.flatnonzero(np.diff(np.searchsorted(np.flatnonzero(entries.labels), starts)))
    if not with_positive.size:
        return out
    grouped, positive = entries.scores, entries.labels
    sizes = starts[with_positive + 1] - starts[with_positive]
    total = int(sizes.sum())
    tasks = min(with_positive.size, 4 * _THREADS, max(1, -(-total // max(1, _CHUNK_ENTRIES // 4))))
    if total < _PARALLEL_ENTRIES or _THREADS == 1:
        tasks = 1
    # Groups of classes with about as many entries each, on parallel threads.
    groups = np.split(with_positive, np.searchsorted(np.cumsum(sizes), np.arange(1, tasks) * total / tasks))
    if tasks == 1:
        out[with_positive] = _class_ap(grouped, positive, starts, with_positive)
        return out
    with concurrent.futures.ThreadPoolExecutor(min(_THREADS, tasks)) as pool:
        for group, ap in zip(groups, pool.map(lambda g: _class_ap(grouped, positive, starts, g), groups)):
            out[group] = ap
    return out


def _counted_rows(scores, labels, mask, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The counted scores (float32) of rows `start:stop` of [N, d] arrays, and whether each is a positive."""
    step = max(1, (1 << 20) // max(scores.shape[1], 1))  # blocks of rows of about 1 M entries: they stay in cache
    kept, positive = [np.zeros(0, np.float32)], [np.zeros(0, bool)]
    for r in range(start, stop, step):
        e = min(stop, r + step)
        s, y = np.asarray(scores[r:e], np.float32).reshape(-1), (labels[r:e] > 0).reshape(-1)
        if mask is not None:  # a flat compress: twice as fast as a 2-D boolean index
            counted = (mask[r:e] > 0).reshape(-1)
            s, y = np.compress(counted, s), np.compress(counted, y)
        kept.append(s)
        positive.append(y)
    return np.concatenate(kept), np.concatenate(positive)


def ap_all(scores: Scored, labels: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None) -> float:
    """Class-agnostic AP: every counted (image, class) entry in one ranking.

    The counted scores (4 bytes each) are split in as many parts as threads,
    each part sorted and searched on its own thread. Of dense arrays, each
    thread reads its part's counted entries row-major: the ranking does not
    depend on their order, so they are not grouped by class into entries.
    """
    if isinstance(scores, VerifiedEntries) or labels is None:
        entries = _entries(scores, labels, mask)
        size = entries.scores.size
        bounds = np.linspace(0, size, min(_THREADS, max(1, size // _CHUNK_ENTRIES)) + 1).astype(int)

        def part(i: int) -> tuple[np.ndarray, np.ndarray]:
            kept = slice(bounds[i], bounds[i + 1])
            return entries.scores[kept], entries.labels[kept]

    else:
        scores, labels = np.asarray(scores), np.asarray(labels)
        mask = None if mask is None else np.asarray(mask)
        _check(scores, labels, mask)
        n, d = scores.shape
        bounds = np.linspace(0, n, min(_THREADS, max(1, n * d // _CHUNK_ENTRIES)) + 1).astype(int)

        def part(i: int) -> tuple[np.ndarray, np.ndarray]:
            return _counted_rows(scores, labels, mask, bounds[i], bounds[i + 1])

    def rank(run) -> float:
        parts = list(run(part, range(len(bounds) - 1)))
        positive = np.concatenate([np.compress(y, s) for s, y in parts])
        if not positive.size:
            return float("nan")
        positive.sort()
        levels, at_least_pos, tied = _thresholds(positive)

        def at_least(counted: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            kept = np.sort(counted[0])
            return kept.size - _count_below(kept, levels)

        return _ap(at_least_pos, tied, sum(run(at_least, parts)))

    if len(bounds) == 2:
        return rank(map)
    with concurrent.futures.ThreadPoolExecutor(len(bounds) - 1) as pool:
        return rank(pool.map)


def top1_accuracy(scores: Scored, labels: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None) -> float:
    """Share of images whose highest-scoring class is a (verified) positive.

    Images without a counted positive are left out.
    """
    entries = _entries(scores, labels, mask)
    has = np.zeros(entries.num_rows, bool)
    has[entries.rows[entries.labels]] = True
    if not has.any():
        return float("nan")
    return float(np.mean(entries.top_positive[has]))


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


def metric(name: str, scores: Scored, labels: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None) -> float:
    """One of `evaluate`'s headline metrics ("mAP", "APall", "top1"), computed alone (arguments as `evaluate`'s)."""
    if name == "mAP":
        return mean_of_defined(average_precision(scores, labels, mask))
    if name == "APall":
        return ap_all(scores, labels, mask)
    if name == "top1":
        return top1_accuracy(scores, labels, mask)
    raise ValueError(f"unknown metric {name!r}: mAP, APall or top1")


def evaluate(scores: Scored, labels: Optional[np.ndarray] = None, mask: Optional[np.ndarray] = None) -> Report:
    """All the papers' metrics of `scores` against verified `labels`.

    Args:
        scores: float [N, d], or `VerifiedEntries` (then no labels or mask).
        labels: {0, 1} [N, d]. Ground truth.
        mask: {0, 1} [N, d] or None. 1 where the entry is verified (counts).
    """
    entries = _entries(scores, labels, mask)
    per_class = average_precision(entries)
    defined = ~np.isnan(per_class)
    return Report(
        per_class_ap=per_class,
        map=mean_of_defined(per_class),
        ap_all=ap_all(entries),
        top1=top1_accuracy(entries),
        classes_without_positives=int((~defined).sum()),
    )
