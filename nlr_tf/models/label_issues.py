"""cleanlab's confident learning (Northcutt et al., JAIR 2021): the one adapter.

Two questions are asked of it:
- which examples have a wrong noisy label (`example_flags`): the
  confident-learning method drops them before training;
- which (image, class) entries are wrong (`entry_flags`): nlr-clean-labels'
  `--finder=cleanlab` ranks them first.
"""

import numpy as np
from absl import logging

# cleanlab's finders fork a multiprocessing pool when n_jobs > 1 (its default on Linux: every physical core). A
# process forked while TensorFlow's threads run can deadlock on a lock one of them held, and the binary then hangs
# for good; in one process the same flags come out, in about 1.5 times the time of two (300,000 examples, 200
# classes: 2.5 s against 1.7 s here).
_N_JOBS = 1


def example_flags(probs: np.ndarray, labels: np.ndarray, multi_label: bool) -> np.ndarray:
    """cleanlab's `find_label_issues` (its multi-label variant for multi-label data): bool [N]."""
    if multi_label:
        from cleanlab.multilabel_classification.filter import find_label_issues

        # A class every example carries has no negative to compare with (cleanlab refuses it): it is not judged.
        judged = labels.sum(0) < labels.shape[0]
        if not judged.any():
            raise ValueError("confident learning: every class is on every noisy example; no label can be judged")
        if not judged.all():
            logging.warning(
                "confident learning: classes %s are on every noisy example and are not judged",
                np.flatnonzero(~judged).tolist(),
            )
        labels, probs = labels[:, judged], probs[:, judged]
        return np.asarray(
            find_label_issues([np.flatnonzero(row).tolist() for row in labels], probs, n_jobs=_N_JOBS), bool
        )
    from cleanlab.filter import find_label_issues

    probs = np.clip(probs, 1e-6, None)
    return np.asarray(find_label_issues(labels.argmax(1), probs / probs.sum(1, keepdims=True), n_jobs=_N_JOBS), bool)


def entry_flags(scores: np.ndarray, noisy_labels: np.ndarray, multi_label: bool) -> np.ndarray:
    """The entries that cleanlab's confident learning finds mislabelled: bool [N, d].

    Multi-label: `cleanlab.multilabel_classification.filter.
    find_multilabel_issues_per_class`, one-vs-rest per class, its thresholds
    from each class's confident joint. Single-label (one noisy label per
    image; scores renormalized to sum to 1): `cleanlab.filter.
    find_label_issues`; a flagged image's noisy entry is a false annotation
    and its most likely other class a missed label. Images without a noisy
    label are not candidates of the single-label finder.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

    scores = np.clip(np.asarray(scores, np.float64), 1e-6, 1.0 - 1e-6)
    noisy = np.asarray(noisy_labels) > 0
    n, d = noisy.shape
    flags = np.zeros((n, d), bool)
    if multi_label:
        per_class = find_multilabel_issues_per_class(
            [np.flatnonzero(row).tolist() for row in noisy], scores, n_jobs=_N_JOBS
        )
        per_class = np.asarray(per_class, bool)  # [N, d] (older cleanlab: a list of d masks)
        return per_class if per_class.shape == (n, d) else per_class.T
    rows = np.flatnonzero(noisy.sum(1) == 1)
    labels = noisy[rows].argmax(1)
    probs = scores[rows] / scores[rows].sum(1, keepdims=True)
    issues = rows[find_label_issues(labels, probs, n_jobs=_N_JOBS)]
    flags[issues, noisy[issues].argmax(1)] = True
    other = np.where(noisy[issues], -np.inf, scores[issues]).argmax(1)
    flags[issues, other] = True
    return flags
