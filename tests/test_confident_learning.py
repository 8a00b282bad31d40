"""Confident learning: out-of-sample probabilities, cleanlab's issues, and a train step that drops them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nlr_tf.models.confident_learning import ConfidentLearningModel
from nlr_tf.models.label_issues import example_flags as find_issues
from nlr_tf.models.logistic import out_of_sample_probabilities


def _synthetic(multi_label, n=500, d=3, flip=0.15, seed=0):
    """Features that determine the true labels; noisy labels with known flips."""
    rng = np.random.default_rng(seed)
    if multi_label:
        truth = rng.random((n, d)) < 0.4
        noisy = truth ^ (rng.random((n, d)) < flip)
    else:
        true_class = rng.integers(0, d, n)
        noisy_class = np.where(rng.random(n) < flip, (true_class + 1) % d, true_class)
        truth, noisy = np.eye(d)[true_class] > 0, np.eye(d)[noisy_class] > 0
    features = truth * 2.0 + rng.normal(scale=0.5, size=(n, d))
    return features, noisy, (noisy != truth).any(1)


@pytest.mark.parametrize("multi_label", [True, False], ids=["multi_label", "single_label"])
def test_cleanlab_finds_the_flipped_examples_from_out_of_sample_probabilities(multi_label):
    features, noisy, wrong = _synthetic(multi_label)
    probs = out_of_sample_probabilities(features, noisy, multi_label, seed=0)
    assert probs.shape == noisy.shape and probs.min() >= 0 and probs.max() <= 1
    flagged = find_issues(probs, noisy, multi_label)
    precision, recall = wrong[flagged].mean(), flagged[wrong].mean()
    assert precision > 0.8 and recall > 0.5, (precision, recall)


def test_cleanlab_runs_in_this_process_without_forking_a_pool(monkeypatch):
    # A pool forked while TensorFlow's threads run can deadlock: the finders must not start one.
    import multiprocessing

    from nlr_tf.models.label_issues import entry_flags

    def no_pool(*args, **kwargs):
        raise AssertionError("cleanlab started a multiprocessing pool")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    for multi_label in (True, False):
        features, noisy, wrong = _synthetic(multi_label)
        probs = out_of_sample_probabilities(features, noisy, multi_label, seed=0)
        assert find_issues(probs, noisy, multi_label).any()
        assert entry_flags(probs, noisy, multi_label).any()


def test_a_class_on_every_noisy_example_is_not_judged_and_the_others_are():
    features, noisy, wrong = _synthetic(True)
    probs = out_of_sample_probabilities(features, noisy, True, seed=0)
    everywhere = np.concatenate([noisy, np.ones((len(noisy), 1), bool)], axis=1)  # a class cleanlab cannot judge
    flagged = find_issues(np.concatenate([probs, np.full((len(noisy), 1), 0.9)], axis=1), everywhere, True)
    np.testing.assert_array_equal(flagged, find_issues(probs, noisy, True))
    with pytest.raises(ValueError, match="every class is on every noisy example"):
        find_issues(np.full((10, 2), 0.9), np.ones((10, 2), bool), True)


def test_the_train_step_drops_the_flagged_examples_and_only_those():
    inputs = keras.Input((4,))
    model = ConfidentLearningModel(keras.Model(inputs, inputs, name="identity"), 2)
    model.set_part_optimizers({"classifier": keras.optimizers.SGD(0.1)})
    rng = np.random.default_rng(0)
    batch = {
        "features": tf.constant(rng.normal(size=(4, 4)), tf.float32),
        "id": tf.constant([b"a", b"b", b"c", b"d"]),
        "noisy_labels": tf.constant([[1, 0], [0, 1], [1, 1], [0, 0]], tf.float32),
        "verified_labels": tf.zeros((4, 2)),
        "verified_mask": tf.zeros((4, 2)),
        "is_clean": tf.zeros((4,)),
    }
    model.set_label_issues(["b"])
    start = [w.numpy().copy() for w in model.classifier.weights]

    def step(labels):
        for w, v in zip(model.classifier.weights, start):
            w.assign(v)
        loss = float(model.train_step(dict(batch, noisy_labels=tf.constant(labels, tf.float32)))["loss"])
        return loss, [w.numpy().copy() for w in model.classifier.weights]

    base, after = step([[1, 0], [0, 1], [1, 1], [0, 0]])
    flagged_changed, after_flagged = step([[1, 0], [1, 0], [1, 1], [0, 0]])  # b's labels: b is dropped
    other_changed, _ = step([[0, 1], [0, 1], [1, 1], [0, 0]])  # a's labels: a counts
    assert flagged_changed == pytest.approx(base) and other_changed != pytest.approx(base)
    for a, b in zip(after, after_flagged):
        np.testing.assert_allclose(a, b)


@pytest.mark.slow
def test_from_the_cli_its_issues_are_kept_in_the_run_dir_and_read_back_on_resume(tmp_path):
    import json

    from cli_util import run_cli
    from conftest import write_toy_dataset

    info, _ = write_toy_dataset(tmp_path / "toy", {"noisy": 100, "clean": 20, "val": 10}, num_shards=2)
    common = ["--backbone=small_cnn", "--image_size=16", "--batch_size=20", "--log_steps=5", "--checkpoint_steps=5"]
    noisy = tmp_path / "noisy"
    proc = run_cli(
        "train", "--method=noisy", f"--dataset={info.path}", f"--model_dir={noisy}", "--train_steps=10", *common
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "cl"
    args = [
        "--method=confident_learning",
        f"--dataset={info.path}",
        f"--model_dir={run}",
        f"--init_checkpoint={noisy}",
        f"--feature_cache={tmp_path / 'features'}",
        *common,
    ]
    proc = run_cli("train", *args, "--train_steps=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    issues = json.loads((run / "label_issues.json").read_text())
    assert issues["num_noisy"] == 100 and issues["num_issues"] == len(issues["ids"]) <= 100
    result = json.loads((run / "train_result.json").read_text())
    assert result["label_issues"] == issues["num_issues"]
    assert result["label_issues_estimated"] is True
    # Another learning rate on the same cache and seed reads the issues kept beside the cache.
    other = tmp_path / "cl_other_lr"
    proc = run_cli("train", *[a for a in args if not a.startswith("--model_dir")], f"--model_dir={other}",
                   "--learning_rate=0.01", "--train_steps=5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((other / "label_issues.json").read_text()) == issues
    assert json.loads((other / "train_result.json").read_text())["label_issues_estimated"] is False
    assert len(list((tmp_path / "features" / "estimates").iterdir())) == 1
    # Another seed is another estimate.
    proc = run_cli("train", *[a for a in args if not a.startswith("--model_dir")], f"--model_dir={tmp_path / 's1'}",
                   "--seed=1", "--train_steps=5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "s1" / "train_result.json").read_text())["label_issues_estimated"] is True
    assert len(list((tmp_path / "features" / "estimates").iterdir())) == 2
    proc = run_cli("train", *args, "--train_steps=10")  # resumes, reading the issues back
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "label_issues.json").read_text()) == issues
    assert json.loads((run / "train_result.json").read_text())["step"] == 10
    without_cache = [a for a in args if not a.startswith("--feature_cache")]
    proc = run_cli("train", *without_cache, f"--model_dir={tmp_path / 'x'}", "--train_steps=5")
    assert proc.returncode == 1 and "--method=confident_learning finds label issues on cached features" in proc.stderr
    assert not (tmp_path / "x").exists()
