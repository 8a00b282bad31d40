"""Clean-label budgets: nested, seeded, stratified subsets of a verified split, and disjoint shares of it."""

import numpy as np
import pytest

from nlr_tf.data import subsets


def _single_label(n=400, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(d, size=n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    return np.eye(d, dtype=np.int32)[y]


def test_every_budget_is_inside_the_larger_ones_and_holds_each_class_in_proportion():
    labels = _single_label()
    fractions = (0.05, 0.1, 0.25, 0.5, 1.0)
    chosen = subsets.nested_subsets(labels, None, fractions, seed=3)
    for small, large in zip(fractions, fractions[1:]):
        assert set(chosen[small]) <= set(chosen[large])
    counts = labels.sum(0)
    for f in fractions:
        assert len(chosen[f]) == round(f * len(labels))
        # Stratified: each class within about one record of its share.
        assert np.abs(labels[chosen[f]].sum(0) - f * counts).max() < 1.5
    assert np.array_equal(chosen[1.0], np.arange(len(labels)))


def test_the_order_is_seeded():
    labels = _single_label()
    a = subsets.nested_subsets(labels, None, (0.1,), seed=0)[0.1]
    assert np.array_equal(a, subsets.nested_subsets(labels, None, (0.1,), seed=0)[0.1])
    assert not np.array_equal(a, subsets.nested_subsets(labels, None, (0.1,), seed=1)[0.1])


def test_multi_label_records_are_stratified_by_their_rarest_verified_positive():
    labels = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0], [1, 1, 1]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 1]])
    # Verified positives: class 0 in four records, class 1 in one, class 2 in one.
    assert subsets.strata(labels, mask).tolist() == [1, 0, 0, subsets.NO_POSITIVE, 2]
    rng = np.random.default_rng(0)
    labels = (rng.random((600, 6)) < [0.5, 0.3, 0.2, 0.1, 0.05, 0.02]).astype(np.int32)
    mask = (rng.random((600, 6)) < 0.7).astype(np.int32)  # partial verification
    chosen = subsets.nested_subsets(labels, mask, (0.2,), seed=0)[0.2]
    group = subsets.strata(labels, mask)
    for g in np.unique(group):
        assert abs((group[chosen] == g).sum() - 0.2 * (group == g).sum()) <= 1


def test_a_class_left_without_a_verified_positive_is_found():
    labels = np.array([[1, 0], [1, 0], [1, 0], [0, 1]])
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0]])  # class 1's only positive is unverified
    assert subsets.classes_without_positive(labels, mask, np.arange(4)) == [1]
    assert subsets.classes_without_positive(labels, None, np.arange(4)) == []


def test_shares_set_aside_are_disjoint_stratified_and_leave_the_rest():
    labels = _single_label(n=500)
    rest, (val, test) = subsets.split_shares(labels, None, (0.2, 0.1), seed=0)
    assert len(val) == 100 and len(test) == 50 and len(rest) == 350
    assert not set(val) & set(test) and not set(rest) & (set(val) | set(test))
    assert sorted(np.concatenate([rest, val, test]).tolist()) == list(range(500))
    for part, f in ((val, 0.2), (test, 0.1)):
        assert np.all(np.abs(labels[part].sum(0) - f * labels.sum(0)) <= 2)


def test_bad_fractions_and_shares_are_refused():
    labels = _single_label(n=10)
    with pytest.raises(ValueError, match="fraction in"):
        subsets.nested_subsets(labels, None, (0.0,), seed=0)
    with pytest.raises(ValueError, match="sum to less than 1"):
        subsets.split_shares(labels, None, (0.6, 0.5), seed=0)
