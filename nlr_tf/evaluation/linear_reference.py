"""A convex reference for the heads: logistic regression on cached features.

The heads the project trains on a feature cache (`ft_last` above all) are
one linear layer on frozen features, fit by Adam for a fixed number of
steps. The same model class solved to convergence is an L2-regularized
logistic regression (sklearn's lbfgs), and its mAP is the number a trained
head is compared to: a head that falls short of it is under- or over-fit,
not limited by its features.

Multi-label data: one binary `LogisticRegression` per class, fit on the
rows where that class has a label (verified entries for `labels="clean"`,
every row for `labels="noisy"`) -- the per-entry masking of the project's
masked sigmoid cross-entropy, with sklearn's default L2 penalty (C=1) added.
Single-label data: one multinomial `LogisticRegression` on the verified
(or the noisy) class. Scores are predicted probabilities, evaluated with
`metrics.evaluate` against the evaluation split's verified labels and mask
(unverified entries count neither in fitting nor in evaluation).

The splits are read with the project's own input pipeline
(`pipeline.make_split_dataset`, as `prediction.predict` does), so the
arrays are exactly what the heads train and are evaluated on.
"""

from typing import Any, Sequence, Union

import numpy as np

from nlr_tf import metrics
from nlr_tf.data.feature_cache import read_split
from nlr_tf.data.schema import DatasetInfo, load_dataset_info
from nlr_tf.models.logistic import (
    DEFAULT_MAX_ITER,
    fit_multi_label,
    fit_single_label,
    predict_multi_label,
    predict_single_label,
)

LABELS = ("clean", "noisy")


def _single_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a positive and their (first) positive class."""
    rows = labels.sum(axis=1) > 0
    return rows, np.argmax(labels[rows], axis=1)


def fit_and_score(
    train: dict[str, np.ndarray],
    evals: dict[str, dict[str, np.ndarray]],
    *,
    multi_label: bool,
    labels: str,
    C: float = 1.0,
    max_iter: int = DEFAULT_MAX_ITER,
) -> dict[str, np.ndarray]:
    """Fits on the arrays `train` (see `read_split`) and scores each array set of `evals`."""
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS}; got {labels!r}")
    x = train["features"]
    d = train["noisy_labels"].shape[1]
    if labels == "clean":
        mask = train["verified_mask"] > 0
        y = (train["verified_labels"] > 0) & mask
    else:
        y = train["noisy_labels"] > 0
        mask = np.ones_like(y)
    if multi_label:
        models = fit_multi_label(x, y, mask, C=C, max_iter=max_iter)
        return {s: predict_multi_label(models, a["features"]) for s, a in evals.items()}
    rows, cls = _single_targets(y.astype(np.float32))
    model = fit_single_label(x[rows], cls, d, C=C, max_iter=max_iter)
    return {s: predict_single_label(model, a["features"], d) for s, a in evals.items()}


def logistic_regression_reference(
    cache_info: Union[DatasetInfo, str],
    train_split: str,
    labels: str,
    eval_splits: Sequence[str] = ("val", "test"),
    C: float = 1.0,
    max_iter: int = DEFAULT_MAX_ITER,
    keep_scores: bool = False,
) -> dict[str, dict[str, Any]]:
    """The convex reference the trained heads are compared to.

    Logistic regression on the cached features of `train_split` -- the model
    class of fine-tuning the last layer (a sigmoid linear layer; softmax on
    single-label data), solved to convergence with sklearn's default L2
    penalty -- evaluated on each of `eval_splits` like a trained model.

    Args:
        cache_info: `DatasetInfo` or folder of a feature cache.
        train_split: str. The split to fit on (e.g. `clean_05`, `noisy`).
        labels: str. "clean": the verified labels (multi-label: each class
            on the rows where it is verified; single-label: the verified
            class). "noisy": the noisy labels (every row; single-label: the
            noisy class).
        eval_splits: splits to evaluate on. Defaults to ("val", "test").
        C: float. Inverse L2 strength (sklearn's). Defaults to 1.0.
        max_iter: int. lbfgs iterations (enough to converge).
        keep_scores: bool. Also return each split's `entries`: the
            `metrics.VerifiedEntries` its metrics were measured on.

    Returns:
        dict of split to {"mAP", "APall", "top1"} (and what `keep_scores` adds).
    """
    info = load_dataset_info(cache_info) if isinstance(cache_info, str) else cache_info
    train = read_split(info, train_split)
    evals = {s: read_split(info, s) for s in eval_splits}
    scores = fit_and_score(train, evals, multi_label=info.multi_label, labels=labels, C=C, max_iter=max_iter)
    out = {}
    for split, s in scores.items():
        entries = metrics.VerifiedEntries.from_dense(s, evals[split]["verified_labels"], evals[split]["verified_mask"])
        report = metrics.evaluate(entries)
        out[split] = {"mAP": report.map, "APall": report.ap_all, "top1": report.top1}
        if keep_scores:
            out[split]["entries"] = entries
    return out
