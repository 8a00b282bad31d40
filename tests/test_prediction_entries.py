"""Predictions kept for evaluation: verified entries batch by batch, in O(verified entries + images) memory."""

import dataclasses

import numpy as np
from conftest import toy_records

from nlr_tf import metrics
from nlr_tf.data import files
from nlr_tf.data.schema import ClassInfo
from nlr_tf.evaluation import evaluator
from nlr_tf.metrics import VerifiedEntries
from nlr_tf.models.methods import build_model, get_method
from nlr_tf.models.prediction import Evaluated, _top_classes, predict, predict_entries
from tfrecords_tools.records import Conversion
from tfrecords_tools.writer import write_dataset

OPEN_IMAGES_CLASSES = 19_957


def _dense(seed=0, n=30, d=6, has_true=None):
    rng = np.random.default_rng(seed)
    return {
        "scores": rng.integers(0, 4, (n, d)).astype(np.float32),  # ties
        "true_labels": (rng.random((n, d)) < 0.3).astype(np.float32),
        "has_true": rng.random(n) < 0.5 if has_true is None else np.full(n, has_true),
        "verified_labels": (rng.random((n, d)) < 0.3).astype(np.float32),
        "verified_mask": (rng.random((n, d)) < 0.5).astype(np.float32),
        "id": np.array([b"%d" % i for i in range(n)]),
    }


def test_top_classes_are_a_stable_argsort():
    scores = _dense(d=50)["scores"]
    for k in (0, 1, 5, 50):
        np.testing.assert_array_equal(_top_classes(scores, k), np.argsort(-scores, axis=1, kind="stable")[:, :k])


def test_evaluated_batch_by_batch_and_taken_rows_are_those_of_the_dense_arrays():
    p = _dense()
    whole = Evaluated.from_dense(p)
    assert whole.entries == VerifiedEntries.from_dense(p["scores"], p["verified_labels"], p["verified_mask"])
    assert whole.truth is None  # not every image has the truth
    index = np.random.default_rng(1).integers(0, 30, 50)
    taken, want = whole.take(index), Evaluated.from_dense({k: v[index] for k, v in p.items()})
    for field in dataclasses.fields(Evaluated):
        got, expected = getattr(taken, field.name), getattr(want, field.name)
        assert got == expected if isinstance(got, VerifiedEntries) else np.array_equal(got, expected), field.name
    truth = _dense(has_true=True)
    assert Evaluated.from_dense(truth).truth == VerifiedEntries.from_dense(truth["scores"], truth["true_labels"])


def test_scores_file_keeps_the_entries_and_an_old_dense_file_is_still_read(tmp_path):
    p = _dense()
    entries = VerifiedEntries.from_dense(p["scores"], p["verified_labels"], p["verified_mask"])
    evaluator.write_scores(str(tmp_path / "new.npz"), entries)
    assert evaluator.read_scores(str(tmp_path / "new.npz")) == entries
    dense = {"scores": p["scores"], "labels": p["verified_labels"], "mask": p["verified_mask"]}
    files.save_npz(str(tmp_path / "old.npz"), compressed=True, **dense)
    assert evaluator.read_scores(str(tmp_path / "old.npz")) == entries
    assert evaluator.read_scores(str(tmp_path / "none.npz")) is None


def test_predict_entries_of_open_images_classes_hold_the_verified_entries_only(tmp_path):
    """A model with Open Images' 19,957 classes: the entries are far smaller than [N, d] and give the dense report."""
    records = toy_records({"test": 48}, num_classes=OPEN_IMAGES_CLASSES, verify_share=0.0005)
    records = [dataclasses.replace(r, verified_pos=sorted(set(r.verified_pos) | set(r.noisy))) for r in records]
    classes = [ClassInfo(id=f"c{i}", name=f"class_{i}", category="all") for i in range(OPEN_IMAGES_CLASSES)]
    conversion = Conversion(classes=classes, multi_label=True, items=records, source="toy", total=len(records))
    info = write_dataset(conversion, str(tmp_path / "oi"), num_shards=1, progress=False)
    options = {"multi_label": True}
    model = build_model(get_method("noisy"), OPEN_IMAGES_CLASSES, "small_cnn", image_size=16, options=options)
    kwargs = dict(backbone="small_cnn", image_size=16, batch_size=16)
    kept = predict_entries(model, info, "test", **kwargs)
    n, d = kept.num_rows, OPEN_IMAGES_CLASSES
    e = kept.entries.scores.size
    assert n == 48 and 0 < e < 20 * n
    # Per entry a row, a label and a score; per image its top class; per class where its entries start.
    assert kept.entries.nbytes == 9 * e + 5 * n + 8 * (d + 1) < n * d * 4 / 20
    per_image = sum(getattr(kept, k).nbytes for k in ("ids", "has_true", "top_class", "top_score", "top_right"))
    assert per_image < 100 * n and kept.truth is None
    dense = predict(model, info, "test", **kwargs)
    want = metrics.evaluate(dense["scores"], dense["verified_labels"], dense["verified_mask"])
    got = metrics.evaluate(kept.entries)
    np.testing.assert_array_equal(got.per_class_ap, want.per_class_ap)
    assert (got.map, got.ap_all, got.top1, got.classes_without_positives) == (
        want.map,
        want.ap_all,
        want.top1,
        want.classes_without_positives,
    )
    assert np.isfinite(got.map)
    np.testing.assert_array_equal(kept.ids, dense["id"])
    top = np.argsort(-dense["scores"], axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(kept.top_class, top)
