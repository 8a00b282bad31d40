"""Per-class decision thresholds: the best F1 or a target precision, on verified entries only."""

import math

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from nlr_tf.evaluation import thresholds


def _data(seed=0, n=300, d=4):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, d)) < 0.3).astype(np.int32)
    scores = np.round(np.clip(0.35 * labels + rng.normal(0.4, 0.2, (n, d)), 0, 1), 2)  # rounded: ties
    mask = (rng.random((n, d)) < 0.8).astype(np.int32)
    return scores, labels, mask


def _sklearn_curve(scores, labels, mask, j):
    keep = mask[:, j] > 0
    p, r, t = precision_recall_curve(labels[keep, j], scores[keep, j])
    return p[:-1], r[:-1], t  # the last point (recall 0) has no threshold


def test_best_f1_matches_scikit_learns_curve_and_the_thresholds_give_it_back():
    scores, labels, mask = _data()
    chosen = thresholds.choose_thresholds(scores, labels, mask)
    assert chosen.rule == thresholds.BEST_F1 and not chosen.why_never
    for j in range(scores.shape[1]):
        p, r, _ = _sklearn_curve(scores, labels, mask, j)
        with np.errstate(invalid="ignore"):
            best = np.nanmax(2 * p * r / (p + r))
        assert chosen.f1[j] == pytest.approx(best)
    # Applied to the same scores, the thresholds give the F1 they were chosen for.
    p, r, f = thresholds.precision_recall_f1(thresholds.predicted_labels(scores, chosen.values), labels, mask)
    np.testing.assert_allclose(f, chosen.f1)
    np.testing.assert_allclose(p, chosen.precision)
    np.testing.assert_allclose(r, chosen.recall)
    # Halfway between distinct scores: a small round-off does not move any image across a threshold.
    again = thresholds.predicted_labels(scores + 1e-4, chosen.values)
    np.testing.assert_array_equal(again, thresholds.predicted_labels(scores, chosen.values))


def test_target_precision_takes_the_most_recall_that_reaches_it():
    scores, labels, mask = _data(seed=1)
    chosen = thresholds.choose_thresholds(scores, labels, mask, target_precision=0.8)
    assert chosen.rule == "precision >= 0.8"
    for j in range(scores.shape[1]):
        p, r, _ = _sklearn_curve(scores, labels, mask, j)
        if j in chosen.why_never:
            assert p.max() < 0.8 and chosen.values[j] == thresholds.NEVER
            continue
        assert chosen.precision[j] >= 0.8
        assert chosen.recall[j] == pytest.approx(r[p >= 0.8].max())


def test_unverified_entries_count_neither_way():
    scores, labels, mask = _data(seed=2)
    chosen = thresholds.choose_thresholds(scores, labels, mask)
    shuffled = scores.copy()
    rng = np.random.default_rng(3)
    shuffled[mask == 0] = rng.random(int((mask == 0).sum()))  # other scores where nothing is verified
    flipped = np.where(mask == 0, 1 - labels, labels)
    again = thresholds.choose_thresholds(shuffled, flipped, mask)
    np.testing.assert_allclose(again.f1, chosen.f1)
    np.testing.assert_allclose(again.precision, chosen.precision)


def test_a_class_without_a_verified_positive_or_out_of_reach_is_never_predicted_and_says_why():
    scores = np.array([[0.9, 0.8], [0.7, 0.6], [0.2, 0.1]])
    labels = np.array([[0, 0], [0, 1], [0, 0]])
    chosen = thresholds.choose_thresholds(scores, labels, target_precision=0.9)
    assert chosen.values[0] == thresholds.NEVER and "no verified positive" in chosen.why_never[0]
    assert chosen.values[1] == thresholds.NEVER and "precision 0.9 not reached" in chosen.why_never[1]
    assert thresholds.predicted_labels(scores, chosen.values).sum() == 0
    record = chosen.as_dict(["a", "b"], "val")
    assert record["classes"][0]["threshold"] is None and "never_predicted" in record["classes"][1]
    # Predicting every entry: the threshold sits below the lowest score.
    every = thresholds.choose_thresholds(np.array([[0.3], [0.5]]), np.array([[1], [1]]))
    assert every.values[0] < 0.3 and every.f1[0] == 1.0 and math.isfinite(every.values[0])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        thresholds.choose_thresholds(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="target_precision"):
        thresholds.choose_thresholds(np.zeros((3, 2)), np.zeros((3, 2)), target_precision=1.5)
