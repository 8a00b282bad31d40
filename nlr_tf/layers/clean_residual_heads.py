"""The clean net and residual net of Hu et al. 2019 as one Keras layer."""

import keras
from keras import ops

from nlr_tf.layers import ACTIVATIONS


@keras.saving.register_keras_serializable(package="nlr_tf")
class CleanResidualHeads(keras.layers.Layer):
    """Clean net `c = W2 a(W1 f)` and residual net `r = W4 a(W3 f)`.

    Both read the shared backbone features f. The classifier `g = sigma(c)`
    is fit to clean labels and is the one used at inference; `h =
    sigma(c + r)` is fit to noisy labels, so the residual net absorbs what is
    unreliable in them and regularizes the clean net. The layer returns the
    logits `c` and `c + r` (sigmoids are applied in the losses, from logits,
    for numerical stability).

    Args:
        num_classes: int. Number of classes d.
        hidden_dim: int. Width of the hidden layer of each net. Defaults
            to 512.
        activation: str. The non-linearity a, one of "sigmoid", "tanh",
            "relu". Defaults to "sigmoid".
        **kwargs: standard layer arguments.

    Call arguments:
        features: float tensor [B, F].

    Returns:
        dict with `clean_logits` (c) and `noisy_logits` (c + r), [B, d].

    Example:
    >>> heads = CleanResidualHeads(num_classes=10, activation="tanh")
    >>> out = heads(keras.ops.ones((2, 32)))
    >>> g = keras.ops.sigmoid(out["clean_logits"])

    Reference:
        Hu et al., Weakly Supervised Image Classification through Noise
        Regularization, CVPR 2019, Sec. 3.2, Eqs. 1-4.
    """

    def __init__(self, num_classes, hidden_dim=512, activation="sigmoid", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes}")
        if not isinstance(hidden_dim, int) or hidden_dim < 1:
            raise ValueError(f"`hidden_dim` must be a positive integer. Received: hidden_dim={hidden_dim}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {ACTIVATIONS}. Received: activation={activation}")
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.activation = activation
        dense = lambda units, name: keras.layers.Dense(units, name=name, dtype=self.dtype_policy)  # noqa: E731
        self.clean_hidden = dense(hidden_dim, "clean_hidden")  # W1
        self.clean_output = dense(num_classes, "clean_output")  # W2
        self.residual_hidden = dense(hidden_dim, "residual_hidden")  # W3
        self.residual_output = dense(num_classes, "residual_output")  # W4

    def build(self, input_shape):
        self.clean_hidden.build(input_shape)
        self.residual_hidden.build(input_shape)
        self.clean_output.build((None, self.hidden_dim))
        self.residual_output.build((None, self.hidden_dim))

    def call(self, features):
        act = keras.activations.get(self.activation)
        c = self.clean_output(act(self.clean_hidden(features)))
        r = self.residual_output(act(self.residual_hidden(features)))
        return {"clean_logits": c, "noisy_logits": ops.add(c, r)}

    def compute_output_shape(self, input_shape):
        shape = (*input_shape[:-1], self.num_classes)
        return {"clean_logits": shape, "noisy_logits": shape}

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "hidden_dim": self.hidden_dim, "activation": self.activation})
        return config
