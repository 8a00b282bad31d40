"""Attention pooling over a set (CleanNet's reference-set encoder)."""

import keras


@keras.saving.register_keras_serializable(package="nlr_tf")
class SetAttention(keras.layers.Layer):
    """Attention pooling over a set: `sum_k softmax_k(u_k . context) h_k`.

    Args:
        units: int. Width of the keys `u` and of the learned context vector.
        **kwargs: standard layer arguments.

    Call arguments:
        values: float [..., K, H]. The set's members `h`.
        keys: float [..., K, units]. What the context is matched with, `u`.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, values_shape, keys_shape=None):
        self.context = self.add_weight(name="context", shape=(self.units,), initializer="glorot_uniform")
        self.built = True

    def call(self, values, keys):
        scores = keras.ops.sum(keys * self.context, axis=-1, keepdims=True)  # [..., K, 1]
        attention = keras.ops.softmax(scores, axis=-2)
        return keras.ops.sum(attention * values, axis=-2)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
