"""Forward correction's noise transition: clean-label probabilities -> noisy-label probabilities through T."""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="nlr_tf")
class NoiseTransition(keras.layers.Layer):
    """Clean-label probabilities -> noisy-label probabilities through a fixed transition T.

    - Single-label: `T` is [d, d], `T[i, j] = P(noisy = j | true = i)`, and
      `p_noisy = p T` (p a distribution over the d classes).
    - Multi-label: each class flips on its own, so T is two rates per
      class, [2, d]: `T[0, j] = P(noisy_j = 1 | true_j = 0)` (false
      positives) and `T[1, j] = P(noisy_j = 0 | true_j = 1)` (misses), and
      `p_noisy_j = p_j (1 - T[1, j]) + (1 - p_j) T[0, j]`.

    T is a non-trainable weight (saved with the model), the identity (no
    noise) until `set_transition` gives it an estimate.

    Args:
        num_classes: int. Number of classes d.
        multi_label: bool. Which of the two forms above.
        **kwargs: standard layer arguments.

    Call arguments:
        probabilities: float tensor [B, d]: softmax (single-label) or
            per-class sigmoid (multi-label) outputs.

    Reference:
        Patrini et al., Making Deep Neural Networks Robust to Label Noise:
        a Loss Correction Approach, CVPR 2017, Sec. 3 (forward correction).
    """

    def __init__(self, num_classes, multi_label, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes}")
        self.num_classes = num_classes
        self.multi_label = bool(multi_label)
        shape = (2, num_classes) if self.multi_label else (num_classes, num_classes)
        identity = np.zeros(shape, np.float32) if self.multi_label else np.eye(num_classes, dtype=np.float32)
        self.transition = self.add_weight(
            name="transition", shape=shape, initializer=keras.initializers.Constant(identity), trainable=False
        )
        self.built = True  # its one weight does not depend on the input shape

    def set_transition(self, transition: np.ndarray) -> None:
        """Assigns an estimated T (checked: probabilities, rows summing to 1 for single-label)."""
        transition = np.asarray(transition, np.float32)
        if transition.shape != tuple(self.transition.shape):
            raise ValueError(f"T must have shape {tuple(self.transition.shape)}. Received: {transition.shape}")
        if transition.min() < 0 or transition.max() > 1:
            raise ValueError("T holds probabilities in [0, 1]")
        if not self.multi_label and not np.allclose(transition.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError("each row of a single-label T sums to 1")
        self.transition.assign(transition)

    def call(self, probabilities):
        t = keras.ops.cast(self.transition, probabilities.dtype)
        if self.multi_label:
            return probabilities * (1.0 - t[1]) + (1.0 - probabilities) * t[0]
        return keras.ops.matmul(probabilities, t)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "multi_label": self.multi_label})
        return config
