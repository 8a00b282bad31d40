"""The label cleaning network of Veit et al. 2017 as a Keras layer."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nlr_tf")
class LabelCleaning(keras.layers.Layer):
    """Cleans noisy labels conditioned on image features, with a clipped skip.

    `e_y = W_y y` embeds the noisy labels as a bag of words, `e_f = W_f f`
    embeds the image features, `z = W_h [e_y; e_f]` is a hidden linear
    layer and `g' = W_o z` projects back to the d classes. The identity skip
    and the clip give the cleaned labels `c = clip(y + g', 0, 1)`: the
    network only learns the difference between noisy and clean labels, and
    with a zero residual it returns the noisy labels unchanged.

    Args:
        num_classes: int. Number of classes d.
        label_embedding_dim: int. Size of `e_y`. Defaults to 128.
        feature_embedding_dim: int. Size of `e_f`. Defaults to 128.
        hidden_dim: int. Size of `z`. Defaults to 256.
        output_initializer: str or initializer for `W_o`. The default
            "zeros" starts the network at the identity (`c = y`), the
            "reasonable outputs right from the beginning" the skip connection
            is meant to give; the other weights start random.
        **kwargs: standard layer arguments.

    Call arguments:
        inputs: list `[noisy_labels, features]`, float tensors [B, d] and
            [B, F].

    Returns:
        The cleaned labels, [B, d], in [0, 1].

    Example:
    >>> layer = LabelCleaning(num_classes=10)
    >>> cleaned = layer([keras.ops.ones((2, 10)), keras.ops.ones((2, 32))])

    Reference:
        Veit et al., Learning From Noisy Large-Scale Datasets With Minimal
        Supervision, CVPR 2017, Sec. 3.1, Eq. 1.
    """

    def __init__(
        self,
        num_classes,
        label_embedding_dim=128,
        feature_embedding_dim=128,
        hidden_dim=256,
        output_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("num_classes", num_classes),
            ("label_embedding_dim", label_embedding_dim),
            ("feature_embedding_dim", feature_embedding_dim),
            ("hidden_dim", hidden_dim),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")
        self.num_classes = num_classes
        self.label_embedding_dim = label_embedding_dim
        self.feature_embedding_dim = feature_embedding_dim
        self.hidden_dim = hidden_dim
        self.output_initializer = keras.initializers.get(output_initializer)
        self.label_embedding = keras.layers.Dense(label_embedding_dim, name="label_embedding", dtype=self.dtype_policy)
        self.feature_embedding = keras.layers.Dense(
            feature_embedding_dim, name="feature_embedding", dtype=self.dtype_policy
        )
        self.hidden = keras.layers.Dense(hidden_dim, name="hidden", dtype=self.dtype_policy)
        self.residual = keras.layers.Dense(
            num_classes, kernel_initializer=self.output_initializer, name="residual", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        labels_shape, features_shape = input_shape
        if labels_shape[-1] is not None and labels_shape[-1] != self.num_classes:
            raise ValueError(
                f"noisy labels must have num_classes={self.num_classes} entries. Received: shape={labels_shape}"
            )
        self.label_embedding.build(labels_shape)
        self.feature_embedding.build(features_shape)
        self.hidden.build((None, self.label_embedding_dim + self.feature_embedding_dim))
        self.residual.build((None, self.hidden_dim))

    def residual_output(self, inputs):
        """The residual `g'` before the skip and the clip."""
        labels, features = inputs
        z = self.hidden(ops.concatenate([self.label_embedding(labels), self.feature_embedding(features)], axis=-1))
        return self.residual(z)

    def call(self, inputs):
        labels = ops.cast(inputs[0], self.compute_dtype)
        return ops.clip(labels + self.residual_output([labels, inputs[1]]), 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "label_embedding_dim": self.label_embedding_dim,
                "feature_embedding_dim": self.feature_embedding_dim,
                "hidden_dim": self.hidden_dim,
                "output_initializer": keras.initializers.serialize(self.output_initializer),
            }
        )
        return config
