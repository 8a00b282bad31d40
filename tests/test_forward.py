"""Forward loss correction (Patrini et al. 2017): T applied, T estimated, and the method run from the CLI."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from cli_util import run_cli
from conftest import write_toy_dataset

from nlr_tf.layers.noise_transition import NoiseTransition
from nlr_tf.models.methods import METHODS, build_model
from nlr_tf.training.tasks.forward import transition_from_anchors, transition_from_pairs

D = 3


def test_single_label_transition_maps_a_distribution_through_t():
    layer = NoiseTransition(D, multi_label=False)
    np.testing.assert_allclose(layer(tf.constant([[0.7, 0.2, 0.1]])).numpy(), [[0.7, 0.2, 0.1]])  # identity at first
    layer.set_transition([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
    # p T = [0.7 * 0.8 + 0.2 * 0.1, 0.7 * 0.2 + 0.2 * 0.9, 0.1]
    np.testing.assert_allclose(layer(tf.constant([[0.7, 0.2, 0.1]])).numpy(), [[0.58, 0.32, 0.1]], atol=1e-6)
    with pytest.raises(ValueError, match="each row of a single-label T sums to 1"):
        layer.set_transition([[0.5, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="must have shape"):
        layer.set_transition(np.eye(2))


def test_multi_label_transition_flips_each_class_on_its_own():
    layer = NoiseTransition(2, multi_label=True)
    layer.set_transition([[0.1, 0.0], [0.2, 0.5]])  # false-positive rates, miss rates
    # class 0: 0.9 * (1 - 0.2) + 0.1 * 0.1 = 0.73; class 1: 0.2 * (1 - 0.5) + 0.8 * 0 = 0.1
    np.testing.assert_allclose(layer(tf.constant([[0.9, 0.2]])).numpy(), [[0.73, 0.1]], atol=1e-6)
    with pytest.raises(ValueError, match=r"T holds probabilities in \[0, 1\]"):
        layer.set_transition([[1.5, 0.0], [0.0, 0.0]])


def _batch(multi_label, n=8, seed=0):
    rng = np.random.default_rng(seed)
    noisy = np.eye(D)[rng.integers(0, D, n)] if not multi_label else (rng.random((n, D)) < 0.4)
    return {
        "features": tf.constant(rng.normal(size=(n, 8)), tf.float32),
        "noisy_labels": tf.constant(noisy, tf.float32),
        "verified_labels": tf.zeros((n, D)),
        "verified_mask": tf.zeros((n, D)),
        "is_clean": tf.zeros((n,)),
    }


def _identity_backbone(dim):
    """Features are the input: the heads alone."""
    inputs = tf.keras.Input((dim,))
    return tf.keras.Model(inputs, inputs, name="identity")


@pytest.mark.parametrize("multi_label", [False, True], ids=["single_label", "multi_label"])
def test_an_identity_t_leaves_the_plain_loss_and_a_noisy_t_changes_it(multi_label):
    from nlr_tf.models.forward import ForwardModel

    model = ForwardModel(_identity_backbone(8), D, multi_label=multi_label)
    batch = _batch(multi_label)
    logits = model.heads(batch["features"])["logits"]
    if multi_label:
        plain = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(batch["noisy_labels"], logits))
    else:
        plain = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(batch["noisy_labels"], logits))
    noise_loss, clean_loss = model.losses_on_batch(batch, training=False)
    np.testing.assert_allclose(float(noise_loss), float(plain), rtol=1e-5)
    assert float(clean_loss) == 0.0  # no clean-set example in the batch
    noisy_t = [[0.1, 0.2, 0.0], [0.3, 0.3, 0.1]] if multi_label else [[0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0, 0, 1]]
    model.set_transition(noisy_t)
    assert abs(float(model.losses_on_batch(batch, training=False)[0]) - float(plain)) > 1e-3


def test_transition_counted_from_paired_labels():
    # Single-label: three images verified as class 0 (noisy 0, 1, 0), two as class 1 (noisy 1, 1); class 2 never.
    verified = np.eye(D)[[0, 0, 0, 1, 1]]
    noisy = np.eye(D)[[0, 1, 0, 1, 1]]
    t = transition_from_pairs(noisy, verified, np.ones_like(verified), multi_label=False)
    np.testing.assert_allclose(t, [[2 / 3, 1 / 3, 0], [0, 1, 0], [0, 0, 1]], atol=1e-6)
    # Multi-label, class 0: verified positives (rows 0, 1), one missed; verified negatives (rows 2, 3), one labelled.
    # Class 1: never verified (rows' mask 0): no evidence, no flips.
    verified = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], np.float32)
    mask = np.array([[1, 0], [1, 0], [1, 0], [1, 0]], np.float32)
    noisy = np.array([[1, 1], [0, 1], [1, 0], [0, 0]], np.float32)
    np.testing.assert_allclose(transition_from_pairs(noisy, verified, mask, multi_label=True), [[0.5, 0], [0.5, 0]])


def test_transition_read_at_anchor_points():
    # Multi-label: class 0 scores 0.1 on 90 images and 0.8 on 10: high anchor 0.8 (miss 0.2), low anchor 0.1 (fp 0.1).
    scores = np.full((100, 1), 0.1)
    scores[90:] = 0.8
    np.testing.assert_allclose(transition_from_anchors(scores, multi_label=True), [[0.1], [0.2]], atol=1e-6)
    # Single-label: the 5 most class-i images of 100 predict row i of T; the others are near uniform.
    rows = np.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]])
    scores = np.full((100, D), 1 / D)
    for i in range(D):
        scores[5 * i : 5 * i + 5] = rows[i]
    np.testing.assert_allclose(transition_from_anchors(scores, multi_label=False), rows, atol=1e-6)


def test_forward_corrects_a_known_flip_that_the_plain_loss_learns():
    """On features that separate the classes, noisy labels flipped 0 -> 1 at 40 %: with the true T the
    classifier's own scores learn the clean labels; with the plain loss they learn the flip."""
    rng = np.random.default_rng(0)
    n, d = 600, 2
    true = rng.integers(0, d, n)
    noisy = np.where((true == 0) & (rng.random(n) < 0.4), 1, true)
    features = np.eye(d)[true] * 3.0 + rng.normal(scale=0.3, size=(n, d))
    batch = {
        "features": tf.constant(features, tf.float32),
        "noisy_labels": tf.constant(np.eye(d)[noisy], tf.float32),
        "verified_labels": tf.zeros((n, d)),
        "verified_mask": tf.zeros((n, d)),
        "is_clean": tf.zeros((n,)),
    }
    from nlr_tf.models.forward import ForwardModel

    results = {}
    for name, t in (("plain", np.eye(d)), ("forward", [[0.6, 0.4], [0.0, 1.0]])):
        tf.keras.utils.set_random_seed(0)
        model = ForwardModel(_identity_backbone(d), d, multi_label=False)
        model.set_transition(t)
        import keras

        model.set_part_optimizers({"classifier": keras.optimizers.Adam(0.05)})
        for _ in range(300):
            model.train_step(batch)
        p = model.heads(batch["features"])["scores"].numpy()
        results[name] = p[true == 0, 0].mean()  # P(class 0) on the images that are truly class 0
    assert results["plain"] == pytest.approx(0.6, abs=0.08)  # learns the noisy-label share
    assert results["forward"] > 0.9  # learns the clean label


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("forward")
    info, _ = write_toy_dataset(root / "toy", {"noisy": 80, "clean": 30, "val": 10}, num_shards=2)
    common = ["--backbone=small_cnn", "--image_size=16", "--batch_size=20", "--train_steps=10", "--log_steps=5"]
    noisy = root / "noisy"
    proc = run_cli("train", "--method=noisy", f"--dataset={info.path}", f"--model_dir={noisy}", *common)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root, info, noisy, common


@pytest.mark.parametrize("transition", ["clean_pairs", "anchor"])
def test_forward_trains_from_the_cli_and_keeps_its_t(runs, transition):
    root, info, noisy, common = runs
    model_dir = root / f"forward_{transition}"
    proc = run_cli(
        "train",
        "--method=forward",
        f"--transition={transition}",
        f"--dataset={info.path}",
        f"--model_dir={model_dir}",
        f"--init_checkpoint={noisy}",
        *common,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((model_dir / "train_result.json").read_text())
    t = np.array(result["transition"])
    assert result["transition_source"] == transition and t.shape == (2, info.num_classes)
    assert t.min() >= 0 and t.max() <= 1 and t.max() > 0  # the toy labels are noisy: some flip is estimated
    from nlr_tf.training.model_dir import load_trained_model

    model, _ = load_trained_model(str(model_dir))
    np.testing.assert_allclose(model.noise_transition.transition.numpy(), t, atol=1e-6)
    if transition == "clean_pairs":  # Hu Table 4 row 6: the Forward model fine-tuned on the clean set
        ft = root / "forward_ft"
        proc = run_cli(
            "train",
            "--method=ft_whole",
            f"--dataset={info.path}",
            f"--model_dir={ft}",
            f"--init_checkpoint={model_dir}",
            *common,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_forward_configuration_errors(runs, tmp_path):
    root, info, noisy, common = runs
    base = [f"--dataset={info.path}", f"--model_dir={tmp_path / 'bad'}", *common]
    cases = [
        (["--method=forward", "--transition=anchor"], "--transition=anchor reads T off a noisy model's predictions"),
        (["--method=ft_last", f"--init_checkpoint={noisy}", "--transition=anchor"], "applies to --method=forward"),
        (["--method=forward", "--clean_split=clean_all"], "--transition=clean_pairs counts T from the paired labels"),
    ]
    for extra, message in cases:
        proc = run_cli("train", *base, *extra)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "bad")


def test_a_forward_model_saves_and_loads_with_its_t(tmp_path):
    model = build_model(METHODS["forward"], D, "small_cnn", image_size=16, options={"multi_label": False})
    model.set_transition([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0, 0, 1]])
    model.save(tmp_path / "m.keras")
    import keras

    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert loaded.multi_label is False
    np.testing.assert_allclose(loaded.noise_transition.transition.numpy(), model.noise_transition.transition.numpy())
