"""Misra et al. 2016's latent visual-presence model: its equations, its loss, and both of its classifiers."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_util import run_cli
from conftest import write_toy_dataset

from nlr_tf.models.misra import MisraModel


def _identity_backbone(dim):
    inputs = keras.Input((dim,))
    return keras.Model(inputs, inputs, name="identity")


def _model(serve="visual"):
    """One class on 1-d features, with weights set by hand: p_v = sigma(2 f), r_0 = sigma(-1), r_1 = sigma(1.5)."""
    model = MisraModel(_identity_backbone(1), 1, serve=serve)
    model.classifier.set_weights([np.array([[2.0]]), np.array([0.0])])
    model.relevance.set_weights([np.zeros((1, 2)), np.array([-1.0, 1.5])])
    return model


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("serve", ["visual", "relevance"])
def test_relevance_is_the_mixture_over_visual_presence(serve):
    f = np.array([[0.5], [-1.0]], np.float32)
    out = _model(serve).heads(f)
    p_v = _sigmoid(2.0 * f)
    p_h = _sigmoid(1.5) * p_v + _sigmoid(-1.0) * (1.0 - p_v)
    np.testing.assert_allclose(out["visual_scores"].numpy(), p_v, atol=1e-6)
    np.testing.assert_allclose(out["relevance_scores"].numpy(), p_h, atol=1e-6)
    np.testing.assert_allclose(out["scores"].numpy(), p_v if serve == "visual" else p_h, atol=1e-6)


def test_the_loss_is_cross_entropy_of_the_human_label_on_noisy_examples_only():
    model = _model()
    f = np.array([[0.5], [-1.0], [3.0]], np.float32)
    batch = {
        "features": tf.constant(f),
        "noisy_labels": tf.constant([[1.0], [0.0], [0.0]]),
        "verified_labels": tf.constant([[0.0], [0.0], [1.0]]),
        "verified_mask": tf.constant([[0.0], [0.0], [1.0]]),
        "is_clean": tf.constant([0.0, 0.0, 1.0]),  # the third example is clean: not counted
    }
    p_v = _sigmoid(2.0 * f[:2, 0])
    p_h = _sigmoid(1.5) * p_v + _sigmoid(-1.0) * (1.0 - p_v)
    expected = -(np.log(p_h[0]) + np.log(1.0 - p_h[1])) / 2
    np.testing.assert_allclose(float(model.losses_on_batch(batch, training=False)), expected, rtol=1e-5)


def test_a_bad_serve_is_refused():
    with pytest.raises(ValueError, match="`serve` must be one of"):
        MisraModel(_identity_backbone(1), 1, serve="g")


def test_both_classifiers_train_from_the_cli(tmp_path):
    info, _ = write_toy_dataset(tmp_path / "toy", {"noisy": 80, "clean": 20, "val": 10}, num_shards=2)
    common = ["--backbone=small_cnn", "--image_size=16", "--batch_size=20", "--train_steps=10", "--log_steps=5"]
    for serve in ("visual", "relevance"):
        model_dir = tmp_path / serve
        proc = run_cli(
            "train", "--method=misra", f"--serve={serve}", f"--dataset={info.path}", f"--model_dir={model_dir}", *common
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads((model_dir / "config.json").read_text())["serve"] == serve
        from nlr_tf.training.model_dir import load_trained_model

        model, _ = load_trained_model(str(model_dir))
        assert model.serve == serve
    proc = run_cli(
        "train", "--method=misra", "--serve=g", f"--dataset={info.path}", f"--model_dir={tmp_path / 'x'}", *common
    )
    assert proc.returncode != 0 and "--serve=g: --method=misra takes one of visual, relevance" in proc.stderr
