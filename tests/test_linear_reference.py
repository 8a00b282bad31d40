"""The logistic-regression reference: sklearn on the cache's arrays, verified entries only."""

import os

import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from nlr_tf.data import schema
from nlr_tf.data.feature_cache import read_split
from nlr_tf.data.parsing import make_example
from nlr_tf.evaluation.linear_reference import DEFAULT_MAX_ITER, logistic_regression_reference

D, F = 3, 6


def _truth(rng, n, multi_label):
    """Features and true multi-hot labels, linearly separable up to some label noise."""
    w = np.random.default_rng(123).normal(size=(F, D))
    x = rng.normal(size=(n, F)).astype(np.float32)
    logits = x @ w + 0.7 * rng.normal(size=(n, D))
    if multi_label:
        truth = (logits > 0.3).astype(np.float32)
    else:
        truth = np.eye(D, dtype=np.float32)[np.argmax(logits, axis=1)]
    return x, truth


def _write_cache(path, splits, multi_label=True):
    """A feature cache folder: `splits` maps a split to (features, noisy, verified, mask) arrays."""
    os.makedirs(path)
    infos = {}
    for split, (x, noisy, verified, mask) in splits.items():
        name = schema.shard_name(split, 0, 1)
        with tf.io.TFRecordWriter(os.path.join(path, name)) as w:
            for i in range(len(x)):
                pos = np.flatnonzero((mask[i] > 0) & (verified[i] > 0))
                neg = np.flatnonzero((mask[i] > 0) & (verified[i] == 0))
                w.write(make_example(f"{split}-{i}", None, np.flatnonzero(noisy[i]), pos, neg, features=x[i]))
        infos[split] = schema.SplitInfo(num_records=len(x), num_shards=1, files=[name])
    info = schema.DatasetInfo(
        num_classes=D,
        multi_label=multi_label,
        splits=infos,
        classes=[schema.ClassInfo(id=f"c{i}", name=f"c{i}") for i in range(D)],
        provenance={"feature_cache": {"feature_dim": F, "backbone": "small_cnn", "backbone_source": "test"}},
    )
    info.write(str(path))
    return schema.load_dataset_info(str(path))


def _splits(seed=0, multi_label=True, verify_share=0.7):
    """train (partly verified), val, test (fully verified): dict of split -> (x, noisy, verified, mask, truth)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", 80), ("val", 50), ("test", 50)):
        x, truth = _truth(rng, n, multi_label)
        share = verify_share if split == "train" else 1.0
        mask = (rng.random((n, D)) < share).astype(np.float32) if multi_label else np.ones((n, D), np.float32)
        noisy = truth.copy()
        out[split] = (x, noisy, truth * mask, mask, truth)
    return out


def _cache(tmp_path, name, splits, multi_label=True):
    return _write_cache(tmp_path / name, {s: v[:4] for s, v in splits.items()}, multi_label)


def test_read_split_gives_the_arrays_written(tmp_path):
    splits = _splits()
    info = _cache(tmp_path, "c", splits)
    got = read_split(info, "train")
    x, noisy, verified, mask, _ = splits["train"]
    np.testing.assert_allclose(got["features"], x)
    np.testing.assert_array_equal(got["noisy_labels"], noisy)
    np.testing.assert_array_equal(got["verified_labels"], verified)
    np.testing.assert_array_equal(got["verified_mask"], mask)


def test_multi_label_reference_equals_a_hand_run_sklearn_loop(tmp_path):
    splits = _splits()
    info = _cache(tmp_path, "c", splits)
    got = logistic_regression_reference(info, "train", "clean")
    x, _, verified, mask, _ = splits["train"]
    for split in ("val", "test"):
        xe, _, ye, _, _ = splits[split]
        aps = []
        for j in range(D):
            rows = mask[:, j] > 0
            lr = LogisticRegression(max_iter=DEFAULT_MAX_ITER).fit(x[rows], verified[rows, j])
            aps.append(average_precision_score(ye[:, j], lr.predict_proba(xe)[:, 1]))
        assert got[split]["mAP"] == pytest.approx(np.mean(aps), abs=1e-6)
        assert got[split]["mAP"] > 0.8  # separable-ish data: the fit is real


def test_unverified_entries_are_not_used_for_fitting(tmp_path):
    splits = _splits()
    x, noisy, verified, mask, truth = splits["train"]
    base = logistic_regression_reference(_cache(tmp_path, "a", splits), "train", "clean")
    # An unverified entry carries only its noisy label: flipping those changes nothing.
    flipped = dict(splits, train=(x, np.where(mask > 0, noisy, 1 - noisy), verified, mask, truth))
    assert logistic_regression_reference(_cache(tmp_path, "b", flipped), "train", "clean") == base
    # Unverified entries treated as verified negatives (the mask misuse) would give another fit.
    as_negatives = dict(splits, train=(x, noisy, verified, np.ones_like(mask), truth))
    assert logistic_regression_reference(_cache(tmp_path, "c", as_negatives), "train", "clean") != base


def test_single_label_top1_equals_sklearn_accuracy(tmp_path):
    splits = _splits(multi_label=False)
    info = _cache(tmp_path, "c", splits, multi_label=False)
    got = logistic_regression_reference(info, "train", "clean")
    x, _, verified, _, _ = splits["train"]
    lr = LogisticRegression(max_iter=DEFAULT_MAX_ITER).fit(x, np.argmax(verified, axis=1))
    for split in ("val", "test"):
        xe, _, ye, _, _ = splits[split]
        assert got[split]["top1"] == pytest.approx(lr.score(xe, np.argmax(ye, axis=1)), abs=1e-9)
        assert got[split]["top1"] > 0.7


def test_noisy_path_fits_the_noisy_labels(tmp_path):
    splits = _splits()
    x, noisy, verified, mask, truth = splits["train"]
    complement = dict(splits, train=(x, 1 - truth, verified, mask, truth))
    info = _cache(tmp_path, "c", complement)
    noisy_fit = logistic_regression_reference(info, "train", "noisy")
    clean_fit = logistic_regression_reference(info, "train", "clean")
    for split in ("val", "test"):
        assert clean_fit[split]["mAP"] > 0.8
        assert noisy_fit[split]["mAP"] < 0.4


def test_single_label_noisy_path_fits_the_noisy_class(tmp_path):
    splits = _splits(multi_label=False)
    x, _, verified, mask, truth = splits["train"]
    wrong = np.roll(truth, 1, axis=1)  # every noisy class is wrong
    info = _cache(tmp_path, "c", dict(splits, train=(x, wrong, verified, mask, truth)), multi_label=False)
    got = logistic_regression_reference(info, "train", "noisy", eval_splits=("val",))
    assert got["val"]["top1"] < 0.2
