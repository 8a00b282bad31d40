"""Metrics against scikit-learn, with ties and masks."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from nlr_tf import metrics


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


def _sklearn_per_class(scores, labels, mask=None):
    """sklearn's AP of each class's verified entries (float32 scores), NaN without a verified positive."""
    scores = np.asarray(scores, np.float32)
    keep = np.ones(labels.shape, bool) if mask is None else mask > 0
    out = np.full(labels.shape[1], np.nan)
    for c in range(labels.shape[1]):
        if (labels[keep[:, c], c] > 0).any():
            out[c] = average_precision_score(labels[keep[:, c], c] > 0, scores[keep[:, c], c])
    return out


@pytest.mark.parametrize("seed", range(3))
def test_continuous_scores_without_ties_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random((3000, 9)) < 0.05).astype(np.float32)
    raw = rng.random((3000, 9)) * 0.5 + 0.5 * labels * rng.random((3000, 9))
    scores = ((np.argsort(np.argsort(raw, axis=None)).reshape(raw.shape) + 0.5) / raw.size).astype(np.float32)
    mask = (rng.random((3000, 9)) < 0.5).astype(np.float32)
    assert np.unique(scores).size == scores.size  # no ties at all, not even across classes
    np.testing.assert_allclose(
        metrics.average_precision(scores, labels, mask), _sklearn_per_class(scores, labels, mask), atol=1e-9
    )
    np.testing.assert_allclose(metrics.average_precision(scores, labels), _sklearn_per_class(scores, labels), atol=1e-9)
    keep = mask > 0
    assert metrics.ap_all(scores, labels, mask) == pytest.approx(
        average_precision_score(labels[keep], scores[keep]), abs=1e-9
    )


def test_a_class_whose_scores_all_tie_has_the_share_of_positives_as_ap():
    rng = np.random.default_rng(1)
    scores = rng.random((200, 3)).astype(np.float32)
    scores[:, 1] = 0.25  # one threshold: precision = share of positives among the verified
    labels = (rng.random((200, 3)) < 0.3).astype(np.float32)
    mask = (rng.random((200, 3)) < 0.7).astype(np.float32)
    got = metrics.average_precision(scores, labels, mask)
    keep = mask[:, 1] > 0
    assert got[1] == pytest.approx(np.mean(labels[keep, 1], dtype=np.float64), abs=1e-12)
    np.testing.assert_allclose(got, _sklearn_per_class(scores, labels, mask), atol=1e-9)
    # Every score equal: APall is the share of positives too.
    flat = np.full_like(scores, 0.5)
    assert metrics.ap_all(flat, labels, mask) == pytest.approx(np.mean(labels[mask > 0], dtype=np.float64), abs=1e-12)


def test_positives_that_are_all_unverified_leave_the_class_without_ap():
    rng = np.random.default_rng(2)
    scores = rng.random((100, 4)).astype(np.float32)
    labels = (rng.random((100, 4)) < 0.3).astype(np.float32)
    mask = np.ones((100, 4), np.float32)
    mask[labels[:, 0] > 0, 0] = 0  # class 0: negatives verified, positives not
    labels[:, 3] = 0  # class 3: no positive at all
    got = metrics.average_precision(scores, labels, mask)
    assert np.isnan(got[[0, 3]]).all() and not np.isnan(got[[1, 2]]).any()
    assert np.isnan(metrics.ap_all(scores, np.zeros_like(labels), mask))
    assert np.isnan(metrics.average_precision(scores, labels, np.zeros_like(mask))).all()


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_dtypes_and_chunkings_equal_sklearn(seed, monkeypatch):
    rng = np.random.default_rng(100 + seed)
    n, d = int(rng.integers(1, 400)), int(rng.integers(1, 40))
    # Small chunks: many chunks of classes on several threads, several ap_all parts.
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", int(rng.choice([7, 300, 1 << 20])))
    scores = rng.random((n, d))  # float64: compared as float32
    if seed % 2:
        scores = np.round(scores, 1)  # few levels
    labels = rng.random((n, d)) < rng.uniform(0.01, 0.6)
    mask = None if seed % 3 == 0 else rng.random((n, d)) < rng.uniform(0.2, 1.0)
    got = metrics.average_precision(scores, labels, mask)
    assert got.shape == (d,) and got.dtype == np.float64
    np.testing.assert_allclose(got, _sklearn_per_class(scores, labels.astype(np.int8), mask), atol=1e-9)
    keep = np.ones((n, d), bool) if mask is None else mask
    want = average_precision_score(labels[keep], scores.astype(np.float32)[keep]) if labels[keep].any() else np.nan
    np.testing.assert_allclose(metrics.ap_all(scores, labels, mask), want, atol=1e-9)


def test_empty_inputs():
    assert metrics.average_precision(np.zeros((5, 0)), np.zeros((5, 0))).shape == (0,)
    assert np.isnan(metrics.average_precision(np.zeros((0, 3)), np.zeros((0, 3)))).all()


# === The entries form: exactly the dense metrics ===
def _case(seed):
    """A random evaluation: ties, unverified entries, classes without positives, all-masked rows, single-label."""
    rng = np.random.default_rng(1000 + seed)
    n, d = int(rng.integers(1, 300)), int(rng.integers(1, 40))
    kind = seed % 4
    scores = rng.random((n, d))
    if kind == 0:
        scores = np.round(scores, 1).astype(np.float32)  # few levels: many ties
    elif kind == 1:
        scores = scores.astype(np.float32)
    elif kind == 2:  # float64 scores that tie only once cast to float32
        scores = np.float32(np.round(scores, 2)) + rng.integers(0, 2, (n, d)) * 1e-12
    else:  # single-label: one positive per image
        scores = np.round(scores, 2).astype(np.float32)
    if kind == 3:
        labels = np.zeros((n, d), np.float32)
        labels[np.arange(n), rng.integers(0, d, n)] = 1.0
    else:
        labels = rng.random((n, d)) < rng.uniform(0.01, 0.6)
        labels = labels.astype(rng.choice([np.float32, np.uint8, bool]))
    mask = None
    if seed % 5:
        mask = (rng.random((n, d)) < rng.uniform(0.05, 1.0)).astype(np.float32)
        mask[rng.random(n) < 0.2] = 0  # images with nothing verified
        if d > 2:
            labels[:, int(rng.integers(d))] = 0  # a class without positives
            mask[:, int(rng.integers(d))] = 0  # a class never verified
    return scores, labels, mask


def _batched(scores, labels, mask, rng):
    """The entries built batch by batch, as `prediction.predict` builds them."""
    cuts = np.unique(np.concatenate(([0, len(scores)], rng.integers(0, len(scores) + 1, 3))))
    return metrics.VerifiedEntries.concatenate(
        [
            metrics.VerifiedEntries.from_dense(scores[a:b], labels[a:b], None if mask is None else mask[a:b])
            for a, b in zip(cuts[:-1], cuts[1:])
        ]
    )


def _assert_same_report(got, want):
    np.testing.assert_array_equal(got.per_class_ap, want.per_class_ap)  # NaN where NaN
    for name in ("map", "ap_all", "top1", "classes_without_positives"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a == b) or (np.isnan(a) and np.isnan(b)), (name, a, b)


@pytest.mark.parametrize("seed", range(40))
def test_entries_give_exactly_the_dense_metrics(seed, monkeypatch):
    import dense_metrics_util as dense

    rng = np.random.default_rng(seed)
    # Small chunks: several blocks of rows, chunks of classes and APall parts.
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", int(rng.choice([7, 300, 1 << 20])))
    monkeypatch.setattr(metrics, "_PARALLEL_ENTRIES", int(rng.choice([0, 1 << 20])))  # classes on threads or not
    monkeypatch.setattr(metrics, "_SPARSE", int(rng.choice([0, 8, 1 << 30])))  # masks read row-major or class-major
    scores, labels, mask = _case(seed)
    want = dense.evaluate(scores, labels, mask)
    whole = metrics.VerifiedEntries.from_dense(scores, labels, mask)
    verified = np.ones(scores.shape, bool) if mask is None else mask > 0
    assert whole.scores.size == np.count_nonzero(verified) and whole.num_rows == len(scores)
    for entries in (whole, _batched(scores, labels, mask, rng)):
        _assert_same_report(metrics.evaluate(entries), want)
        for name in ("mAP", "APall", "top1"):
            np.testing.assert_array_equal(metrics.metric(name, entries), dense.metric(name, scores, labels, mask))
    # The dense API is the entries path.
    _assert_same_report(metrics.evaluate(scores, labels, mask), want)
    np.testing.assert_array_equal(metrics.average_precision(scores, labels, mask), want.per_class_ap)
    np.testing.assert_array_equal(metrics.ap_all(scores, labels, mask), want.ap_all)
    np.testing.assert_array_equal(metrics.top1_accuracy(scores, labels, mask), want.top1)
    # Images drawn with replacement (the bootstrap): the entries of the drawn rows, repeated.
    idx = rng.integers(0, len(scores), len(scores))
    drawn = whole.take(idx)
    sub_mask = None if mask is None else mask[idx]
    _assert_same_report(metrics.evaluate(drawn), dense.evaluate(scores[idx], labels[idx], sub_mask))
    assert drawn == metrics.VerifiedEntries.from_dense(scores[idx], labels[idx], sub_mask)


def test_entries_of_nothing_verified_and_of_no_classes():
    import dense_metrics_util as dense

    scores = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    labels = np.ones((6, 4), np.float32)
    for mask in (np.zeros((6, 4)), None):
        _assert_same_report(
            metrics.evaluate(metrics.VerifiedEntries.from_dense(scores, labels, mask)),
            dense.evaluate(scores, labels, mask),
        )
    empty = metrics.VerifiedEntries.from_dense(np.zeros((5, 0)), np.zeros((5, 0)))
    assert empty.scores.size == 0 and metrics.average_precision(empty).shape == (0,)
    assert np.isnan(metrics.top1_accuracy(empty)) and np.isnan(metrics.ap_all(empty))
    none = metrics.VerifiedEntries.from_dense(np.zeros((0, 3)), np.zeros((0, 3)))
    assert np.isnan(metrics.average_precision(none)).all()
    with pytest.raises(ValueError, match="labels or mask"):
        metrics.evaluate(none, np.zeros((0, 3)))
