"""Patrini et al. 2017: forward loss correction through a noise transition matrix T."""

import keras
import numpy as np
import tensorflow as tf

from nlr_tf.layers.noise_transition import NoiseTransition
from nlr_tf.models.base_model import NoisyLabelModel
from nlr_tf.models.losses import masked_bce_with_logits, masked_mean

_EPS = 1e-7


@keras.saving.register_keras_serializable(package="nlr_tf")
class ForwardModel(NoisyLabelModel):
    """Backbone + classifier, its loss on noisy labels taken through the noise transition T.

    The classifier `p` (softmax for single-label data, per-class sigmoid for
    multi-label) is what the model serves; noisy-set examples are fit to
    their noisy labels through `p_noisy = T(p)` (`NoiseTransition`), so
    that p itself learns the clean labels. Clean-set examples, if the batch
    mix has any, are fit to their verified labels directly. T is a
    non-trainable weight, the identity until `set_transition` assigns an
    estimate (forward's training task estimates it once before training:
    from the clean set's paired noisy and verified labels, as Hu et al.
    2019's Forward row, or from the starting noisy model's predictions at
    anchor points, Patrini et al.'s estimator).

    Outputs: `scores` (p) and `logits`, [B, d].

    Args:
        backbone: `keras.Model`. Images to features.
        num_classes: int. Number of classes d.
        multi_label: bool. Per-class sigmoid and flip rates (True), or
            softmax and a d x d T. Defaults to True.
        **kwargs: standard model arguments.

    Reference:
        Patrini et al., Making Deep Neural Networks Robust to Label Noise:
        a Loss Correction Approach, CVPR 2017.
    """

    family = "forward"
    head_part = "classifier"
    loss_names = ("loss", "noise_loss", "clean_loss")

    def __init__(self, backbone, num_classes, multi_label=True, **kwargs):
        # === Layers ===
        self.classifier = keras.layers.Dense(num_classes, name="classifier")
        self.noise_transition = NoiseTransition(num_classes, multi_label, name="noise_transition")
        # === Functional Model ===
        features = self.features_input(backbone)
        logits = self.classifier(features)
        scores = keras.layers.Activation("sigmoid" if multi_label else "softmax", name="scores")(logits)
        heads = keras.Model(features, {"scores": scores, "logits": logits}, name="heads")
        super().__init__(backbone, heads, num_classes, **kwargs)
        # === Config ===
        self.multi_label = bool(multi_label)

    def part_layers(self):
        return {"backbone": [self.backbone], "classifier": [self.classifier]}

    # === T ===
    def set_transition(self, transition: np.ndarray) -> None:
        """Assigns an estimated T: [2, d] flip rates (multi-label) or [d, d] (single-label); see `NoiseTransition`."""
        self.noise_transition.set_transition(transition)

    # === Training ===
    def losses_on_batch(self, batch, training=True):
        """The corrected loss on noisy-set examples and the plain one on clean-set ones (this replica's share)."""
        is_clean, noisy_mask, clean_mask = self.split_masks(batch, self.num_classes)
        out = self.heads(self.features(batch, training=training), training=training)
        noisy_p = tf.clip_by_value(self.noise_transition(out["scores"]), _EPS, 1.0 - _EPS)
        labels = tf.cast(batch["noisy_labels"], noisy_p.dtype)
        if self.multi_label:
            per_entry = -(labels * tf.math.log(noisy_p) + (1.0 - labels) * tf.math.log(1.0 - noisy_p))
            noise_loss = masked_mean(per_entry, noisy_mask)
            clean_loss = masked_bce_with_logits(batch["verified_labels"], out["logits"], clean_mask)
        else:
            # One cross-entropy per example: noisy-set examples with a noisy label, clean-set ones with a verified one.
            per_example = -tf.reduce_sum(labels * tf.math.log(noisy_p), axis=1, keepdims=True)
            has_noisy = (1.0 - is_clean) * tf.reduce_max(labels, axis=1, keepdims=True)
            noise_loss = masked_mean(per_example, has_noisy)
            verified = tf.cast(batch["verified_labels"], out["logits"].dtype) * clean_mask
            per_clean = tf.nn.softmax_cross_entropy_with_logits(verified, out["logits"])[:, None]
            clean_loss = masked_mean(per_clean, tf.reduce_max(verified, axis=1, keepdims=True))
        return noise_loss, clean_loss

    def train_step(self, batch):
        with self.gradient_tape() as tape:
            noise_loss, clean_loss = self.losses_on_batch(batch)
            loss = noise_loss + clean_loss
        self.apply_part_gradients(tape, loss)
        return {"loss": loss, "noise_loss": noise_loss, "clean_loss": clean_loss}

    def get_config(self):
        config = super().get_config()
        config.update({"multi_label": self.multi_label})
        return config
