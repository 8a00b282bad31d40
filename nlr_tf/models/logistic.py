"""scikit-learn's logistic regression on fixed features: the one adapter.

A linear head on frozen features is a logistic regression; solved to
convergence (lbfgs) it is the convex reference of the trained heads
(`evaluation.linear_reference`), and fit on k - 1 folds it gives confident
learning its out-of-sample probabilities (`nlr_tf.training.tasks.confident_learning`).

Multi-label data: one binary `LogisticRegression` per class, fit on the rows
where the class has a label. Single-label data: one multinomial
`LogisticRegression`. A class with one label value only cannot be fit: its
score is the constant prior of that value.
"""

from typing import Union

import numpy as np
from sklearn.linear_model import LogisticRegression

# lbfgs on raw (unscaled) features may need far more than sklearn's default 100 iterations.
DEFAULT_MAX_ITER = 5000


def _constant(y: np.ndarray) -> float:
    # The constant prior of a class with one label value only (1 if every row is positive, else 0).
    return float(y.mean()) if y.size else 0.0


def fit_multi_label(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, C: float = 1.0, max_iter: int = DEFAULT_MAX_ITER
) -> list:
    """One binary logistic regression per class on the rows where `mask` is 1.

    Returns:
        list of d entries: a fitted `LogisticRegression`, or a float (the
        constant score of a class with one label value only).
    """
    models = []
    for j in range(y.shape[1]):
        rows = mask[:, j] > 0
        yj = (y[rows, j] > 0).astype(np.int64)
        if np.unique(yj).size < 2:
            models.append(_constant(yj))
        else:
            models.append(LogisticRegression(C=C, max_iter=max_iter).fit(x[rows], yj))
    return models


def predict_multi_label(models: list, x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Scores [N, d]: each class's probability of being present."""
    cols = [np.full(len(x), m) if isinstance(m, float) else m.predict_proba(x)[:, 1] for m in models]
    return np.stack(cols, axis=1).astype(dtype)


def fit_single_label(
    x: np.ndarray, cls: np.ndarray, num_classes: int, C: float = 1.0, max_iter: int = DEFAULT_MAX_ITER
) -> Union[LogisticRegression, np.ndarray]:
    """A multinomial logistic regression of `cls` [N] (class indices) on `x`.

    Returns the fitted model, or, when only one class occurs, the constant
    scores [d] (that class's prior 1, the others 0).
    """
    if np.unique(cls).size < 2:
        return np.bincount(cls, minlength=num_classes).astype(np.float32) / max(len(cls), 1)
    # lbfgs with more than two classes is multinomial (softmax) in sklearn.
    return LogisticRegression(C=C, max_iter=max_iter).fit(x, cls)


def predict_single_label(model, x: np.ndarray, num_classes: int, dtype=np.float32) -> np.ndarray:
    """Scores [N, d]: class probabilities (0 for a class unseen in training)."""
    if isinstance(model, np.ndarray):
        return np.tile(model, (len(x), 1)).astype(dtype)
    scores = np.zeros((len(x), num_classes), dtype)
    scores[:, model.classes_] = model.predict_proba(x)
    return scores


def out_of_sample_probabilities(
    features: np.ndarray, labels: np.ndarray, multi_label: bool, seed: int, folds: int = 5, max_iter: int = 1000
) -> np.ndarray:
    """Predicted probabilities of every example from a model that did not see it: k-fold logistic regression.

    Args:
        features: float [N, F].
        labels: {0, 1} [N, d]. The noisy labels.
        multi_label: bool. One regression per class, else one multinomial.
        seed: int. The folds' shuffle.
        folds: int. k.
        max_iter: int. lbfgs iterations per fit.

    Returns:
        float64 [N, d].
    """
    from sklearn.model_selection import KFold

    n, d = labels.shape
    probs = np.zeros((n, d))
    for train, held in KFold(folds, shuffle=True, random_state=seed).split(features):
        if multi_label:
            models = fit_multi_label(features[train], labels[train], np.ones_like(labels[train]), max_iter=max_iter)
            probs[held] = predict_multi_label(models, features[held], dtype=np.float64)
        else:
            model = fit_single_label(features[train], labels[train].argmax(1), d, max_iter=max_iter)
            probs[held] = predict_single_label(model, features[held], d, dtype=np.float64)
    return probs
