"""nlr-eval's reports: gain binning, class statistics, PR-curve data, the examples grid."""

import numpy as np
import pytest
from conftest import write_toy_dataset

from nlr_tf.evaluation import examples, gains, pr_curves
from nlr_tf.metrics import VerifiedEntries
from nlr_tf.models.prediction import Evaluated

NAN = float("nan")


def test_gain_by_group_sorts_cuts_and_averages_by_hand():
    # Class:           0     1     2     3     4     5     6
    statistic = [5.0, 1.0, 3.0, 3.0, 9.0, 2.0, NAN]
    model_ap = [0.9, 0.2, 0.5, 0.7, NAN, 0.4, 0.8]
    baseline_ap = [0.8, 0.4, 0.5, 0.3, NAN, 0.1, 0.8]
    table = gains.gain_by_group(statistic, model_ap, baseline_ap, [f"c{i}" for i in range(7)], num_groups=3)
    # Class 4 has no AP and class 6 no statistic: left out. The rest by
    # statistic: 1 (1), 5 (2), 2 (3), 3 (3, tie keeps class order), 0 (5);
    # five classes in three groups: 2 + 2 + 1.
    assert table["left_out_without_ap"] == 1 and table["left_out_without_statistic"] == 1
    assert table["num_groups"] == 3
    g1, g2, g3 = table["groups"]
    assert [g["classes"] for g in table["groups"]] == [["c1", "c5"], ["c2", "c3"], ["c0"]]
    assert [g["num_classes"] for g in table["groups"]] == [2, 2, 1]
    assert (g1["min"], g1["max"], g2["min"], g2["max"], g3["min"], g3["max"]) == (1, 2, 3, 3, 5, 5)
    assert g1["baseline_mAP"] == pytest.approx((0.4 + 0.1) / 2) and g1["model_mAP"] == pytest.approx((0.2 + 0.4) / 2)
    assert g1["gain"] == pytest.approx(((0.2 - 0.4) + (0.4 - 0.1)) / 2)
    assert g2["gain"] == pytest.approx((0.0 + 0.4) / 2)
    assert g3["gain"] == pytest.approx(0.1)


def test_gain_by_group_makes_ten_groups_of_near_equal_size_or_fewer_for_few_classes():
    rng = np.random.default_rng(0)
    ap = rng.random(23)
    table = gains.gain_by_group(rng.permutation(23).astype(float), ap, ap * 0.5)
    assert table["num_groups"] == 10 and [g["num_classes"] for g in table["groups"]] == [3, 3, 3] + [2] * 7
    assert [g["min"] for g in table["groups"]] == sorted(g["min"] for g in table["groups"])
    assert all(a["max"] < b["min"] for a, b in zip(table["groups"], table["groups"][1:]))
    # Mean gain over all classes is the size-weighted mean of the groups' gains.
    weighted = sum(g["gain"] * g["num_classes"] for g in table["groups"]) / 23
    assert weighted == pytest.approx(np.mean(ap * 0.5))
    few = gains.gain_by_group([3.0, 1.0, 2.0], [0.5, 0.6, 0.7], [0.5, 0.5, 0.5])
    assert few["num_groups"] == 3 and [g["classes"] for g in few["groups"]] == [["1"], ["2"], ["0"]]
    text = gains.format_gain_table(few, "title")
    assert "fewer than 10 classes to group: 3 groups of one class" in text
    with pytest.raises(ValueError, match="must all be"):
        gains.gain_by_group([1.0, 2.0], [0.5], [0.5])


def _by_hand_statistics(records, num_classes, split, use_truth):
    count, judged, correct = np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes)
    for r in records:
        if r.split != split:
            continue
        for c in r.noisy:
            count[c] += 1
            if use_truth:
                judged[c] += 1
                correct[c] += c in r.true
            elif c in r.verified_pos or c in r.verified_neg:
                judged[c] += 1
                correct[c] += c in r.verified_pos
    return count, judged, correct


@pytest.mark.parametrize("with_true", [True, False])
def test_class_statistics_count_the_noisy_split_and_judge_by_labelstats_rule(tmp_path, with_true):
    split_sizes = {"noisy": 40, "clean": 25, "test": 5}
    info, records = write_toy_dataset(tmp_path / "toy", split_sizes, num_shards=2, with_true=with_true)
    stats = gains.class_statistics(info)
    count, _, _ = _by_hand_statistics(records, 5, "noisy", use_truth=with_true)
    np.testing.assert_array_equal(stats.frequency, count)
    # With the truth on every record the noisy split itself is judged (all
    # its annotations); without it only the clean split's verified labels
    # can judge an annotation.
    assert stats.noisy_split == "noisy" and stats.quality_split == ("noisy" if with_true else "clean")
    _, judged, correct = _by_hand_statistics(records, 5, stats.quality_split, use_truth=with_true)
    np.testing.assert_allclose(stats.quality, correct / judged)
    assert stats.judged == judged.sum()
    with pytest.raises(ValueError, match="no records in split 'nope'"):
        gains.class_statistics(info, noisy_split="nope")


def test_pr_curve_data_counts_verified_entries_at_each_threshold():
    rng = np.random.default_rng(1)
    n, d, t = 200, 6, 11
    scores = rng.random((n, d)).astype(np.float32)
    scores[:3, 0] = [0.0, 1.0, 0.5]
    labels = (rng.random((n, d)) < 0.3).astype(np.float32)
    mask = (rng.random((n, d)) < 0.7).astype(np.float32)
    entries = VerifiedEntries.from_dense(scores, labels, mask)
    curves = pr_curves.pr_curves(entries, ["a", "b", "a", "b", "b", "b"], num_thresholds=t)
    assert set(curves) == {"all", "a", "b"} and all(c.shape == (6, t) for c in curves.values())
    for name, cols in (("all", slice(None)), ("a", [0, 2]), ("b", [1, 3, 4, 5])):
        s, y, m = scores[:, cols], labels[:, cols] > 0, mask[:, cols] > 0
        for i in range(t):
            predicted = (s >= i / (t - 1)) & m
            tp, fp = (predicted & y).sum(), (predicted & ~y).sum()
            positives, negatives = (y & m).sum(), (~y & m).sum()
            expected = [tp, fp, negatives - fp, positives - tp, tp / max(tp + fp, 1), tp / positives]
            np.testing.assert_allclose(curves[name][:, i], expected, rtol=1e-6, err_msg=f"{name} threshold {i}")
    # Unverified entries are left out: their scores change nothing.
    moved = np.where(mask > 0, scores, rng.random((n, d)).astype(np.float32))
    moved = VerifiedEntries.from_dense(moved, labels, mask)
    np.testing.assert_array_equal(pr_curves.pr_curves(moved, ["a"] * d, t)["all"], curves["all"])
    assert list(pr_curves.pr_curves(entries, ["x"] * d)) == ["all"]


def test_top_k_judged_uses_truth_where_known_else_verified_labels():
    d = 6
    p = {
        "scores": np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.1], [0.1, 0.5, 0.6, 0.7, 0.8, 0.9]], np.float32),
        "true_labels": np.array([[1, 0, 1, 0, 0, 0], [0] * d], np.float32),
        "has_true": np.array([True, False]),
        "verified_labels": np.array([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]], np.float32),
        "verified_mask": np.array([[1] * d, [0, 0, 1, 0, 1, 1]], np.float32),
        "id": np.array([b"a", b"b"]),
    }
    p = Evaluated.from_dense(p)
    assert examples.top_k_judged(p, 0) == [
        (0, pytest.approx(0.9), True),
        (1, pytest.approx(0.8), False),  # the truth wins over a wrong verification
        (2, pytest.approx(0.7), True),
        (3, pytest.approx(0.6), False),
        (4, pytest.approx(0.5), False),
    ]
    judged = examples.top_k_judged(p, 1)
    assert [(c, right) for c, _, right in judged] == [(5, True), (4, True), (3, None), (2, False), (1, None)]


def test_render_examples_draws_a_grid_of_marked_predictions():
    rng = np.random.default_rng(2)
    n, d = 5, 7
    p = {
        "scores": rng.random((n, d)).astype(np.float32),
        "true_labels": (rng.random((n, d)) < 0.3).astype(np.float32),
        "has_true": np.array([True] * n),
        "verified_labels": np.zeros((n, d), np.float32),
        "verified_mask": np.zeros((n, d), np.float32),
        "id": np.array([f"img-{i}".encode() for i in range(n)]),
    }
    p = Evaluated.from_dense(p)
    images = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(n)]
    names = [f"class {i}" for i in range(d)]
    alone = examples.render_examples(images, p, range(n), names, cols=3)
    beside = examples.render_examples(images, p, range(n), names, baseline=p, cols=3)
    assert alone.dtype == np.uint8 and alone.ndim == 3 and alone.shape[2] == 3
    assert beside.shape[0] == alone.shape[0] and beside.shape[1] > alone.shape[1]  # baseline column beside
    # Right (green) and wrong (red) marks are drawn.
    colors = {tuple(c) for c in alone.reshape(-1, 3)[::7]}
    assert any(g > 120 and r < 80 for r, g, b in colors) and any(r > 180 and g < 80 for r, g, b in colors)
