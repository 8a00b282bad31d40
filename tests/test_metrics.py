"""Metrics against scikit-learn, with ties and masks."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from nlr_tf.models import metrics


def _data(seed, n=400, d=12, levels=7):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(n, d)).astype(np.float32) / levels  # many ties
    labels = (rng.random((n, d)) < 0.3).astype(np.float32)
    mask = (rng.random((n, d)) < 0.6).astype(np.float32)
    return scores, labels, mask


@pytest.mark.parametrize("seed", range(4))
def test_per_class_ap_equals_sklearn_with_ties_and_masks(seed):
    scores, labels, mask = _data(seed)
    got = metrics.average_precision(scores, labels, mask)
    for c in range(scores.shape[1]):
        keep = mask[:, c] > 0
        want = average_precision_score(labels[keep, c], scores[keep, c])
        assert got[c] == pytest.approx(want, abs=1e-6)
    no_mask = metrics.average_precision(scores, labels)
    for c in range(scores.shape[1]):
        assert no_mask[c] == pytest.approx(average_precision_score(labels[:, c], scores[:, c]), abs=1e-6)


def test_ap_all_equals_sklearn_on_the_flattened_verified_entries():
    scores, labels, mask = _data(7)
    keep = mask > 0
    assert metrics.ap_all(scores, labels, mask) == pytest.approx(
        average_precision_score(labels[keep], scores[keep]), abs=1e-6
    )


def test_unverified_entries_do_not_count():
    scores, labels, mask = _data(3)
    flipped = np.where(mask > 0, labels, 1.0 - labels)
    shuffled = np.where(mask > 0, scores, np.random.default_rng(0).random(scores.shape))
    np.testing.assert_allclose(
        metrics.average_precision(shuffled, flipped, mask), metrics.average_precision(scores, labels, mask), atol=1e-12
    )


def test_classes_without_positives_are_reported_and_left_out_of_the_mean():
    scores, labels, mask = _data(5, d=6)
    labels[:, 2] = 0
    mask[:, 4] = 0
    report = metrics.evaluate(scores, labels, mask)
    assert np.isnan(report.per_class_ap[[2, 4]]).all() and report.classes_without_positives == 2
    defined = [c for c in range(6) if c not in (2, 4)]
    assert report.map == pytest.approx(np.mean(report.per_class_ap[defined]))
    assert report.as_dict(list("abcdef"))["per_class_AP"]["c"] is None


def test_perfect_and_worst_rankings_and_top1():
    labels = np.eye(4, dtype=np.float32)
    assert metrics.average_precision(labels, labels).tolist() == [1.0] * 4
    assert metrics.top1_accuracy(labels + 0.1, labels) == 1.0
    assert metrics.top1_accuracy(np.roll(labels, 1, axis=1), labels) == 0.0
    with pytest.raises(ValueError, match="must both be"):
        metrics.average_precision(np.zeros((3, 2)), np.zeros((3, 3)))
