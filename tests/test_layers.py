"""The methods' custom layers: their equations and the Keras layer contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_test_util import run_layer_contract

from nlr_tf.layers.clean_residual_heads import CleanResidualHeads
from nlr_tf.layers.label_cleaning import LabelCleaning

D, F, B = 6, 8, 5


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((B, D)) < 0.4).astype(np.float32)
    features = rng.normal(size=(B, F)).astype(np.float32)
    return labels, features


def test_label_cleaning_layer_contract(tmp_path):
    labels, features = _inputs()
    run_layer_contract(
        LabelCleaning,
        {
            "num_classes": D,
            "label_embedding_dim": 4,
            "feature_embedding_dim": 3,
            "hidden_dim": 5,
            "output_initializer": "glorot_uniform",
        },
        [labels, features],
        tmp_path,
        expected_output_shape=(B, D),
    )


def test_clean_residual_heads_contract(tmp_path):
    _, features = _inputs()
    run_layer_contract(
        CleanResidualHeads,
        {"num_classes": D, "hidden_dim": 7, "activation": "tanh"},
        features,
        tmp_path,
        expected_output_shape={"clean_logits": (B, D), "noisy_logits": (B, D)},
    )


def test_zero_residual_returns_the_noisy_labels_exactly():
    labels, features = _inputs()
    layer = LabelCleaning(D, label_embedding_dim=4, feature_embedding_dim=3, hidden_dim=5)
    np.testing.assert_array_equal(layer([labels, features]).numpy(), labels)  # zero-initialized W_o
    layer = LabelCleaning(D, output_initializer="glorot_uniform")
    layer([labels, features])
    layer.residual.kernel.assign(tf.zeros_like(layer.residual.kernel))
    np.testing.assert_array_equal(layer([labels, features]).numpy(), labels)


def test_cleaned_labels_are_the_clipped_skip_sum():
    labels, features = _inputs()
    layer = LabelCleaning(D, output_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=1))
    cleaned = layer([labels, features]).numpy()
    assert cleaned.min() >= 0.0 and cleaned.max() <= 1.0
    assert 0 < np.mean((cleaned > 0) & (cleaned < 1)) < 1  # the residual is large: some clip, some do not
    # c = clip(y + W_o W_h [W_y y; W_f f], 0, 1), from the weights by hand.
    ey = labels @ layer.label_embedding.kernel.numpy() + layer.label_embedding.bias.numpy()
    ef = features @ layer.feature_embedding.kernel.numpy() + layer.feature_embedding.bias.numpy()
    z = np.concatenate([ey, ef], 1) @ layer.hidden.kernel.numpy() + layer.hidden.bias.numpy()
    residual = z @ layer.residual.kernel.numpy() + layer.residual.bias.numpy()
    np.testing.assert_allclose(cleaned, np.clip(labels + residual, 0, 1), atol=1e-5)


@pytest.mark.parametrize(
    "activation,fn",
    [("sigmoid", lambda x: 1 / (1 + np.exp(-x))), ("tanh", np.tanh), ("relu", lambda x: np.maximum(x, 0))],
)
def test_heads_compute_g_and_h_as_the_paper(activation, fn):
    _, features = _inputs()
    heads = CleanResidualHeads(D, hidden_dim=9, activation=activation)
    out = heads(features)
    w = {
        name: (getattr(heads, name).kernel.numpy(), getattr(heads, name).bias.numpy())
        for name in ("clean_hidden", "clean_output", "residual_hidden", "residual_output")
    }
    dense = lambda x, name: x @ w[name][0] + w[name][1]  # noqa: E731
    c = dense(fn(dense(features, "clean_hidden")), "clean_output")
    r = dense(fn(dense(features, "residual_hidden")), "residual_output")
    np.testing.assert_allclose(out["clean_logits"].numpy(), c, atol=1e-5)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    np.testing.assert_allclose(tf.sigmoid(out["clean_logits"]).numpy(), sigmoid(c), atol=1e-6)  # g = sigma(c)
    np.testing.assert_allclose(tf.sigmoid(out["noisy_logits"]).numpy(), sigmoid(c + r), atol=1e-6)  # h = sigma(c + r)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Received: activation=softmax"):
        CleanResidualHeads(3, activation="softmax")
    with pytest.raises(ValueError, match="Received: hidden_dim=0"):
        LabelCleaning(3, hidden_dim=0)
    with pytest.raises(ValueError, match="num_classes=3 entries"):
        LabelCleaning(3)([np.zeros((2, 4), np.float32), np.zeros((2, 5), np.float32)])
