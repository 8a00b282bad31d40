"""nlr-clean-labels: cleaned labels, ranked suspected label errors and their precision."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from cli_util import run_cli
from conftest import write_toy_dataset

from nlr_tf.backbones.networks import build_backbone
from nlr_tf.data import parsing, pipeline, schema
from nlr_tf.data.feature_cache import extract_features
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.schema import load_dataset_info
from nlr_tf.evaluation import cleaned_output, cleaning, suspects
from nlr_tf.models import label_issues
from nlr_tf.training.model_dir import load_trained_model

NUM_CLASSES = 5
IMAGE_SIZE = 16


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A toy dataset with known truth, a `noisy` run and label_cleaning heads trained on its feature cache."""
    root = tmp_path_factory.mktemp("clean_labels")
    info, records = write_toy_dataset(
        root / "toy", {"noisy": 60, "clean": 20, "test": 10}, num_shards=2, with_true=True
    )
    # Deterministic: on some draws the cleaning network ends with every c-hat under the threshold (no label left).
    common = [
        f"--dataset={info.path}",
        f"--image_size={IMAGE_SIZE}",
        "--batch_size=20",
        "--log_steps=10",
        "--deterministic",
        "--seed=1",
    ]
    proc = run_cli("train", "--method=noisy", f"--model_dir={root / 'noisy'}", "--train_steps=5", *common)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(
        "train",
        "--method=label_cleaning",
        f"--model_dir={root / 'lc'}",
        f"--init_checkpoint={root / 'noisy'}",
        "--train_backbone=false",
        f"--feature_cache={root / 'fc'}",
        # Enough steps on cached features for the cleaning network to move
        # some labels across the threshold.
        "--train_steps=40",
        "--cleaning_learning_rate=0.05",
        *common,
    )
    assert proc.returncode == 0, proc.stderr
    truth = {r.id: r.true for r in records if r.split == "noisy"}
    return root, info, truth


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def _cleaned_by_model(model_dir, info):
    """c-hat and images per id, computed here from the source images through the model's parts."""
    model, _ = load_trained_model(str(model_dir))
    input_config = InputConfig(backbone="small_cnn", image_size=IMAGE_SIZE)
    ds = pipeline.make_split_dataset(info, "noisy", 32, input_config=input_config, training=False, with_ids=True)
    out = {}
    for batch in ds:
        c_hat = model.cleaner([batch["noisy_labels"], model.backbone(batch["image"], training=False)]).numpy()
        for image_id, c, image, noisy in zip(batch["id"].numpy(), c_hat, batch["image"].numpy(), batch["noisy_labels"]):
            out[image_id.decode()] = (c, image, noisy.numpy())
    return out


def _check_suspects_csv(path, truth, with_cleaned):
    header, rows = _read_csv(path)
    expected = ["rank", "image_id", "class_index", "class_id", "class_name", "kind", "kind_rank", "suspicion", "score"]
    assert header == expected + (["cleaned_score"] if with_cleaned else []) + ["verified", "is_error"]
    suspicion = [float(r["suspicion"]) for r in rows]
    assert suspicion == sorted(suspicion, reverse=True)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        score, c = float(r["score"]), int(r["class_index"])
        if r["kind"] == "false_annotation":
            assert float(r["suspicion"]) == pytest.approx(1 - score, abs=2e-6)
            assert r["is_error"] == str(int(c not in truth[r["image_id"]]))
        else:
            assert r["kind"] == "missed_label" and float(r["suspicion"]) == pytest.approx(score, abs=2e-6)
            assert r["is_error"] == str(int(c in truth[r["image_id"]]))
        assert r["class_name"] == f"class_{c}" and r["verified"] == ""
    for kind in suspects.KINDS:
        assert [int(r["kind_rank"]) for r in rows if r["kind"] == kind] == list(
            range(1, sum(r["kind"] == kind for r in rows) + 1)
        )
    return rows


@pytest.mark.slow
def test_label_cleaning_model_writes_a_cleaned_dataset_that_reads_back(runs):
    root, info, truth = runs
    out_dir = root / "out_lc"
    proc = run_cli(
        "clean_labels",
        f"--model_dir={root / 'lc'}",
        f"--dataset={info.path}",
        f"--output_dir={out_dir}",
        "--max_suspects=50",
        "--precision_depths=5,20",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert "precision (%) of the ranked suspects" in proc.stdout and "false-annotation share" in proc.stdout

    # The cleaned dataset reads back through the contract and the pipeline:
    # same ids and images, label/noisy = c-hat > 0.5, c-hat kept.
    out = load_dataset_info(str(out_dir))
    assert sorted(out.splits) == sorted(info.splits) and out.splits["noisy"].num_records == 60
    meta = out.provenance["cleaned_labels"]
    assert meta["model_dir"] == str(root / "lc") and meta["source_dataset"] == info.path and meta["threshold"] == 0.5
    expected = _cleaned_by_model(root / "lc", info)
    input_config = InputConfig(backbone="small_cnn", image_size=IMAGE_SIZE)
    ds = pipeline.make_split_dataset(
        out, "noisy", 32, input_config=input_config, training=False, with_ids=True, with_true=True
    )
    seen, changed = set(), 0
    labels, true_labels = [], []
    for batch in ds:
        for i, image_id in enumerate(batch["id"].numpy()):
            c_hat, image, noisy = expected[image_id.decode()]
            np.testing.assert_array_equal(batch["image"][i].numpy(), image)
            np.testing.assert_array_equal(batch["noisy_labels"][i].numpy(), (c_hat > 0.5).astype(np.float32))
            changed += int(np.any((c_hat > 0.5) != (noisy > 0)))
            seen.add(image_id.decode())
            labels.append(batch["noisy_labels"][i].numpy())
            true_labels.append(batch["true_labels"][i].numpy())
    assert seen == set(expected) and changed > 0
    spec = {
        schema.IMAGE_ID: tf.io.FixedLenFeature([], tf.string),
        schema.LABEL_CLEANED_SCORES: tf.io.FixedLenFeature([NUM_CLASSES], tf.float32),
    }
    for raw in tf.data.TFRecordDataset(out.split_files("noisy")):
        f = tf.io.parse_single_example(raw, spec)
        np.testing.assert_allclose(
            f[schema.LABEL_CLEANED_SCORES], expected[f[schema.IMAGE_ID].numpy().decode()][0], atol=1e-5
        )
    # Other splits are copied byte for byte; the noise statistics are fresh.
    for f in info.splits["clean"].files:
        assert (out_dir / f).read_bytes() == (root / "toy" / f).read_bytes()
    labels, true_labels = np.array(labels) > 0, np.array(true_labels) > 0
    stats = out.provenance["noise_statistics"]["noisy"]
    assert labels.any()
    assert stats["false_annotation_share"] == pytest.approx((labels & ~true_labels).sum() / labels.sum())
    assert stats["missed_label_share"] == pytest.approx((true_labels & ~labels).sum() / true_labels.sum())

    # cleaned_labels.csv: names of the noisy and cleaned labels, c-hat per class.
    header, rows = _read_csv(out_dir / cleaned_output.CLEANED_LABELS_CSV)
    assert header[:5] == ["image_id", "noisy_labels", "cleaned_labels", "removed", "added"]
    assert header[5:] == [f"cleaned_score/class_{c}" for c in range(NUM_CLASSES)] and len(rows) == 60
    for r in rows:
        c_hat, _, noisy = expected[r["image_id"]]
        assert r["cleaned_labels"] == ";".join(f"class_{c}" for c in np.flatnonzero(c_hat > 0.5))
        assert r["noisy_labels"] == ";".join(f"class_{c}" for c in np.flatnonzero(noisy))
        np.testing.assert_allclose([float(r[h]) for h in header[5:]], c_hat, atol=2e-6)

    # Suspects: ranked by the classifier's p-hat, c-hat alongside.
    rows = _check_suspects_csv(out_dir / cleaned_output.SUSPECTS_CSV, truth, with_cleaned=True)
    assert len(rows) == 50
    for r in rows[:5]:
        assert float(r["cleaned_score"]) == pytest.approx(expected[r["image_id"]][0][int(r["class_index"])], abs=2e-6)

    report = json.loads((out_dir / cleaned_output.REPORT_JSON).read_text())
    assert set(report["suspect_precision"]) == {"false_annotation", "missed_label", "all"}
    assert set(report["suspect_precision"]["all"]["precision_at"]) == {"5", "20"}
    assert (
        report["suspect_precision"]["false_annotation"]["num_candidates"]
        == report["cleaning_effect"]["before"]["annotations"]
    )
    assert report["cleaning_effect"]["after"]["false_annotation_share"] == pytest.approx(
        stats["false_annotation_share"]
    )


def test_feature_cache_gives_the_same_cleaned_labels(runs, tmp_path):
    root, info, _ = runs
    from_images = cleaning.clean_labels(str(root / "lc"), info.path, str(tmp_path / "a"), max_suspects=0)
    from_cache = cleaning.clean_labels(str(root / "lc"), str(root / "fc"), str(tmp_path / "b"), max_suspects=0)
    assert from_cache["features"] == "feature cache" and from_images["features"] == "images"
    assert from_cache["cleaned_labels"]["noise_statistics"] == from_images["cleaned_labels"]["noise_statistics"]
    _, a = _read_csv(tmp_path / "a" / cleaned_output.CLEANED_LABELS_CSV)
    _, b = _read_csv(tmp_path / "b" / cleaned_output.CLEANED_LABELS_CSV)
    assert [r["cleaned_labels"] for r in a] == [r["cleaned_labels"] for r in b]
    # The cleaned dataset copies the images of the cache's source dataset.
    out = load_dataset_info(str(tmp_path / "b"))
    assert out.feature_dim == 0 and out.provenance["cleaned_labels"]["source_dataset"] == info.path
    # A cache of another backbone is caught: scores from its features and from the images differ.
    other = build_backbone("small_cnn", "none", IMAGE_SIZE, trainable=False)
    fc_other = str(tmp_path / "fc_other")
    extract_features(other, info, fc_other, backbone_name="small_cnn", backbone_source="x", image_size=IMAGE_SIZE)
    with pytest.raises(cleaning.CleaningError, match="not this model's backbone features"):
        cleaning.clean_labels(str(root / "lc"), fc_other, str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_non_cleaning_model_writes_only_the_suspects(runs):
    root, info, truth = runs
    out_dir = root / "out_noisy"
    # Flags from a flagfile, as with the other binaries.
    flagfile = root / "noisy_suspects.cfg"
    flagfile.write_text(f"# suspects of the noisy run\n--model_dir={root / 'noisy'}\n--dataset={info.path}\n--quiet\n")
    proc = run_cli("clean_labels", f"--flagfile={flagfile}", f"--output_dir={out_dir}")
    assert proc.returncode == 0, proc.stderr
    assert "cleaned labels need a label_cleaning model" in proc.stdout
    assert sorted(os.listdir(out_dir)) == [cleaned_output.REPORT_JSON, cleaned_output.SUSPECTS_CSV]
    rows = _check_suspects_csv(out_dir / cleaned_output.SUSPECTS_CSV, truth, with_cleaned=False)
    # Every (image, class) entry, within the default --max_suspects.
    assert len(rows) == 60 * NUM_CLASSES
    report = json.loads((out_dir / cleaned_output.REPORT_JSON).read_text())
    assert report["cleaned_labels"] is None and report["suspect_precision"]["all"]["num_candidates"] == 300
    num_noisy = sum(len(r["noisy"]) for r in parsing.iterate_label_lists(info.split_files("noisy")))
    assert report["suspects"]["candidates"]["false_annotation"] == num_noisy
    assert sum(r["kind"] == "false_annotation" for r in rows) == num_noisy

    # The same run's suspects ranked by cleanlab's confident learning, beside the self-confidence ranking.
    proc = run_cli("clean_labels", f"--flagfile={flagfile}", f"--output_dir={root / 'out_cl'}", "--finder=cleanlab")
    assert proc.returncode == 0, proc.stderr
    assert "precision (%) of the self-confidence ranking against label/true" in proc.stdout
    cl = json.loads((root / "out_cl" / cleaned_output.REPORT_JSON).read_text())
    assert cl["suspects"]["finder"] == "cleanlab" and 0 <= cl["suspects"]["cleanlab_flagged"] <= 300
    assert cl["suspect_precision_self_confidence"] == report["suspect_precision"]
    assert cl["suspect_precision"]["all"]["num_errors"] == report["suspect_precision"]["all"]["num_errors"]


def test_errors_are_one_line_and_leave_no_output(runs, tmp_path):
    root, info, _ = runs
    out_dir = tmp_path / "out"
    args = [f"--model_dir={root / 'lc'}", f"--output_dir={out_dir}"]
    proc = run_cli("clean_labels", *args, f"--dataset={info.path}", "--split=nope")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("nlr-clean-labels: error: ")
    assert "has no split 'nope'" in proc.stderr and not out_dir.exists()
    other, _ = write_toy_dataset(tmp_path / "other", {"noisy": 5}, num_classes=7)
    proc = run_cli("clean_labels", *args, f"--dataset={other.path}")
    assert proc.returncode == 1 and "nlr-clean-labels: error: the model has 5 classes but dataset" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error" in line]) == 1 and not out_dir.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]
    # An existing output folder is not replaced without --overwrite.
    out_dir.mkdir()
    with pytest.raises(cleaning.CleaningError, match="already exists"):
        cleaning.clean_labels(str(root / "lc"), info.path, str(out_dir))


# === The ranking and its precision on hand-made cases ===


def test_rank_suspects_kinds_order_and_truth():
    scores = np.array([[0.9, 0.2], [0.6, 0.95]])
    noisy = np.array([[1, 1], [0, 0]])
    truth = np.array([[1, 0], [0, 1]])
    ranked = suspects.rank_suspects(scores, noisy, truth, has_true=np.array([True, False]))
    assert list(zip(ranked.row, ranked.cls)) == [(1, 1), (0, 1), (1, 0), (0, 0)]
    assert [suspects.KINDS[k] for k in ranked.kind] == ["missed_label", "false_annotation"] * 2
    np.testing.assert_allclose(ranked.suspicion, [0.95, 0.8, 0.6, 0.1], atol=1e-6)
    assert ranked.kind_rank.tolist() == [1, 1, 2, 2]
    assert ranked.is_error.tolist() == [-1, 1, -1, 0]
    # Ties keep the entries' order.
    tied = suspects.rank_suspects(np.full((2, 2), 0.5), np.eye(2))
    assert list(zip(tied.row, tied.cls)) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def _noisy_multi_label(seed=0, n=400, d=4, flip=0.15):
    """Labels with known errors, and scores that see through most of them."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, d)) < 0.3
    noisy = truth ^ (rng.random((n, d)) < flip)
    scores = np.clip(np.where(truth, 0.8, 0.2) + rng.normal(scale=0.15, size=(n, d)), 0.01, 0.99)
    return scores, noisy.astype(np.int64), truth.astype(np.int64)


def test_cleanlab_ranking_puts_its_flags_first_in_self_confidence_order():
    scores, noisy, truth = _noisy_multi_label()
    ranked, flagged = suspects.rank_suspects_with_cleanlab(scores, noisy, True, truth)
    flags = label_issues.entry_flags(scores, noisy, multi_label=True)
    assert flagged == flags.sum() and 0 < flagged < flags.size
    head = flags[ranked.row, ranked.cls]
    assert head[:flagged].all() and not head[flagged:].any()
    for part in (slice(0, flagged), slice(flagged, None)):  # self-confidence order within each group
        assert np.all(np.diff(ranked.suspicion[part]) <= 0)
    # Confident learning flags real errors: far above the 15 % base rate.
    assert ranked.is_error[:flagged].mean() > 0.6 > 0.15
    assert sorted(zip(ranked.row, ranked.cls)) == [(i, j) for i in range(400) for j in range(4)]


def test_cleanlab_single_label_flags_an_images_noisy_entry_and_its_likely_class():
    rng = np.random.default_rng(1)
    n, d = 300, 3
    truth = rng.integers(0, d, n)
    noisy = np.where(rng.random(n) < 0.2, (truth + 1) % d, truth)
    scores = np.full((n, d), 0.05)
    scores[np.arange(n), truth] = 0.9
    flags = label_issues.entry_flags(scores, np.eye(d)[noisy], multi_label=False)
    flagged_images = np.flatnonzero(flags.any(1))
    assert len(flagged_images) and set(flagged_images) <= set(np.flatnonzero(noisy != truth))
    for i in flagged_images:
        assert flags[i, noisy[i]] and flags[i, truth[i]] and flags[i].sum() == 2


def test_ranking_precision_hand_made():
    r = suspects.ranking_precision(np.array([1, 0, 1, 1, 0, 0, 1, 0]), depths=[1, 2, 4, 8, 10])
    assert r["num_candidates"] == 8 and r["num_errors"] == 4 and r["base_rate"] == 0.5
    assert r["precision_at"] == {"1": 1.0, "2": 0.5, "4": 0.75, "8": 0.5, "10": None}
    assert r["precision_at_K"] == 0.75
    assert r["average_precision"] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)
    none = suspects.ranking_precision(np.zeros(3), depths=[2])
    assert none["precision_at"] == {"2": 0.0} and none["precision_at_K"] is None and none["average_precision"] is None


def test_suspect_precision_per_kind_on_a_known_ranking():
    # Noisy positives with scores 0.1 (false), 0.3 (correct), 0.9 (correct);
    # noisy negatives with scores 0.8 (missed), 0.2 (correct), 0.05 (correct).
    scores = np.array([[0.1, 0.3, 0.9, 0.8, 0.2, 0.05]])
    noisy = np.array([[1, 1, 1, 0, 0, 0]])
    truth = np.array([[0, 1, 1, 1, 0, 0]])
    p = suspects.suspect_precision(suspects.rank_suspects(scores, noisy, truth), depths=[1, 2])
    assert p["false_annotation"]["precision_at"] == {"1": 1.0, "2": 0.5}
    assert p["missed_label"]["precision_at"] == {"1": 1.0, "2": 0.5}
    # One list: 0.9 (false annotation), 0.8 (missed), 0.7, 0.2, 0.1, 0.05.
    assert p["all"]["precision_at"] == {"1": 1.0, "2": 1.0} and p["all"]["average_precision"] == 1.0


def test_cleaning_effect_and_thresholds():
    noisy = np.array([[1, 1, 0], [0, 1, 0]])
    truth = np.array([[1, 0, 1], [0, 1, 1]])
    cleaned = np.array([[1, 0, 1], [1, 1, 0]])
    e = suspects.cleaning_effect(noisy, cleaned, truth)
    assert e["before"]["false_annotation_share"] == pytest.approx(1 / 3)
    assert e["before"]["missed_label_share"] == pytest.approx(2 / 4)
    assert e["after"]["false_annotation_share"] == pytest.approx(1 / 4)
    assert e["after"]["missed_label_share"] == pytest.approx(1 / 4)
    assert e["relative_reduction"]["false_annotation_share"] == pytest.approx(0.25)
    assert e["relative_reduction"]["missed_label_share"] == pytest.approx(0.5)
    assert e["removed"] == {"count": 1, "false": 1} and e["added"] == {"count": 2, "true": 1}
    c_hat = np.array([[0.6, 0.7, 0.1], [0.2, 0.4, 0.3]])
    np.testing.assert_array_equal(cleaning.threshold_cleaned(c_hat, 0.5), [[1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(cleaning.threshold_cleaned(c_hat, 0.5, multi_label=False), [[0, 1, 0], [0, 0, 0]])
