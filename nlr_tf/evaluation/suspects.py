"""Suspected label errors: ranking noisy labels by how unlikely the model finds them.

Every (image, class) entry of a split is a candidate error of one kind:

- `false_annotation`: a noisy positive (y = 1) the model finds unlikely;
  suspicion `1 - p`.
- `missed_label`: a noisy negative (y = 0) the model finds likely; suspicion
  `p`.

`p` is the model's score for the class (a classifier's `p̂`, Hu's `g`). With
calibrated scores the suspicion is the model's probability that the noisy
entry is wrong, so both kinds share one ranking. Where the truth is known
(`label/true`, the built-in benchmark) each candidate is an error or not,
and the ranking has a precision at every depth, per kind.

`rank_suspects_with_cleanlab` ranks the same entries with the field's
standard finder, cleanlab's confident learning, for comparison.

Pure numpy (and cleanlab); `cleaning.py` feeds it the predictions of a
trained model.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from nlr_tf.models import label_issues

FALSE_ANNOTATION = "false_annotation"
MISSED_LABEL = "missed_label"
KINDS = (FALSE_ANNOTATION, MISSED_LABEL)


@dataclasses.dataclass
class Suspects:
    """Every candidate entry of a split, most suspicious first.

    Args:
        row: int64 [M]. Index of the image in the predictions.
        cls: int64 [M]. Class index.
        kind: int8 [M]. Index into `KINDS`.
        suspicion: float32 [M]. Non-increasing.
        kind_rank: int64 [M]. 1-based rank among the candidates of the same
            kind (what a list filtered by kind shows).
        is_error: int8 [M]. 1 an error, 0 correct, -1 unknown (the image
            has no known truth).
    """

    row: np.ndarray
    cls: np.ndarray
    kind: np.ndarray
    suspicion: np.ndarray
    kind_rank: np.ndarray
    is_error: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def count(self, kind: str) -> int:
        return int(np.sum(self.kind == KINDS.index(kind)))


def rank_suspects(
    scores: np.ndarray,
    noisy_labels: np.ndarray,
    true_labels: Optional[np.ndarray] = None,
    has_true: Optional[np.ndarray] = None,
) -> Suspects:
    """Ranks every (image, class) entry as a candidate label error.

    Args:
        scores: float [N, d]. The model's class scores in [0, 1].
        noisy_labels: {0, 1} [N, d]. The labels under suspicion.
        true_labels: {0, 1} [N, d] or None. Known truth.
        has_true: bool [N] or None. Which rows of `true_labels` are known.
            Defaults to all rows when `true_labels` is given.

    Returns:
        `Suspects`, sorted by suspicion, most suspicious first; ties keep
        the entries' order (image, then class).
    """
    scores = np.asarray(scores, np.float32)
    noisy = np.asarray(noisy_labels) > 0
    if scores.shape != noisy.shape or scores.ndim != 2:
        raise ValueError(f"scores and noisy_labels must both be [N, d]; got {scores.shape} and {noisy.shape}")
    n, d = scores.shape
    suspicion = np.where(noisy, 1.0 - scores, scores).reshape(-1)
    kind = np.where(noisy, 0, 1).astype(np.int8).reshape(-1)
    if true_labels is None:
        is_error = np.full(n * d, -1, np.int8)
    else:
        known = np.ones(n, bool) if has_true is None else np.asarray(has_true, bool)
        wrong = noisy != (np.asarray(true_labels) > 0)
        is_error = np.where(known[:, None], wrong, -1).astype(np.int8).reshape(-1)
    order = np.argsort(-suspicion, kind="stable")
    kind = kind[order]
    kind_rank = np.empty(n * d, np.int64)
    for k in range(len(KINDS)):
        members = kind == k
        kind_rank[members] = np.arange(1, int(members.sum()) + 1)
    return Suspects(
        row=order // d,
        cls=order % d,
        kind=kind,
        suspicion=suspicion[order],
        kind_rank=kind_rank,
        is_error=is_error[order],
    )


FINDERS = ("self_confidence", "cleanlab")


def rank_suspects_with_cleanlab(
    scores: np.ndarray,
    noisy_labels: np.ndarray,
    multi_label: bool,
    true_labels: Optional[np.ndarray] = None,
    has_true: Optional[np.ndarray] = None,
) -> tuple[Suspects, int]:
    """Every entry ranked with confident learning: the entries it flags first, then the rest.

    Within each group entries keep the self-confidence order of
    `rank_suspects` (the score cleanlab itself ranks issues by), so the two
    rankings differ exactly in which entries confident learning flags.

    Returns:
        `Suspects` and the number of flagged entries (the list's head).
    """
    flags = label_issues.entry_flags(scores, noisy_labels, multi_label)
    ranked = rank_suspects(scores, noisy_labels, true_labels, has_true)
    flagged = flags[ranked.row, ranked.cls]
    order = np.argsort(~flagged, kind="stable")  # flagged first, each group in its existing order
    kind = ranked.kind[order]
    kind_rank = np.empty(len(kind), np.int64)
    for k in range(len(KINDS)):
        members = kind == k
        kind_rank[members] = np.arange(1, int(members.sum()) + 1)
    out = Suspects(
        row=ranked.row[order],
        cls=ranked.cls[order],
        kind=kind,
        suspicion=ranked.suspicion[order],
        kind_rank=kind_rank,
        is_error=ranked.is_error[order],
    )
    return out, int(flags.sum())


def ranking_precision(is_error: np.ndarray, depths: Sequence[int]) -> dict[str, Any]:
    """Precision of a ranked list of candidates at several depths.

    Args:
        is_error: {0, 1} [M], in rank order (most suspicious first).
        depths: ints. Depths to report; a depth beyond the list gives None.

    Returns:
        dict: `num_candidates`, `num_errors` (K), `base_rate` (the precision
        of a random ranking), `precision_at` (str(depth) -> precision),
        `precision_at_K` (precision of the top K: a ranking that puts every
        error first scores 1) and `average_precision` (mean over the errors
        of the precision at each error's rank). None where undefined.
    """
    hits = np.asarray(is_error) > 0
    m, k = len(hits), int(hits.sum())
    found = np.cumsum(hits)
    at = {str(depth): (float(found[depth - 1]) / depth if 0 < depth <= m else None) for depth in depths}
    ranks = np.flatnonzero(hits) + 1
    return {
        "num_candidates": m,
        "num_errors": k,
        "base_rate": k / m if m else None,
        "precision_at": at,
        "precision_at_K": float(found[k - 1]) / k if k else None,
        "average_precision": float(np.mean(found[ranks - 1] / ranks)) if k else None,
    }


def suspect_precision(suspects: Suspects, depths: Sequence[int]) -> dict[str, Any]:
    """`ranking_precision` of each kind's own ranking and of the joint list.

    Only candidates with a known truth count; call it when every image has one.
    """
    known = suspects.is_error >= 0
    out = {}
    for i, kind in enumerate(KINDS):
        out[kind] = ranking_precision(suspects.is_error[known & (suspects.kind == i)], depths)
    out["all"] = ranking_precision(suspects.is_error[known], depths)
    return out


def _annotation_counts(labels: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    num_labels, num_true = int(labels.sum()), int(truth.sum())
    false, missed = int((labels & ~truth).sum()), int((truth & ~labels).sum())
    return {
        "annotations": num_labels,
        "false_annotations": false,
        "missed_labels": missed,
        "true_labels": num_true,
        "false_annotation_share": false / num_labels if num_labels else None,
        "missed_label_share": missed / num_true if num_true else None,
    }


def _reduction(before: Optional[float], after: Optional[float]) -> Optional[float]:
    return None if before is None or after is None or before == 0 else (before - after) / before


def cleaning_effect(noisy_labels: np.ndarray, cleaned_labels: np.ndarray, true_labels: np.ndarray) -> dict[str, Any]:
    """How much cleaned labels reduce false and missed annotations.

    Shares as in the dataset's noise statistics: false annotations over all
    annotations, missed labels over all true labels.

    Args:
        noisy_labels, cleaned_labels, true_labels: {0, 1} [N, d].

    Returns:
        dict: `before` and `after` (counts and shares), `relative_reduction`
        of each share ((before - after) / before), `removed` and `added`
        annotations with how many of them were right to remove or add.
    """
    noisy, cleaned, truth = (np.asarray(a) > 0 for a in (noisy_labels, cleaned_labels, true_labels))
    removed, added = noisy & ~cleaned, cleaned & ~noisy
    before, after = _annotation_counts(noisy, truth), _annotation_counts(cleaned, truth)
    return {
        "before": before,
        "after": after,
        "relative_reduction": {
            share: _reduction(before[share], after[share]) for share in ("false_annotation_share", "missed_label_share")
        },
        "removed": {"count": int(removed.sum()), "false": int((removed & ~truth).sum())},
        "added": {"count": int(added.sum()), "true": int((added & truth).sum())},
    }
