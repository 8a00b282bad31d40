"""Patrini et al. 2017: forward loss correction through a noise transition matrix T."""

import keras
import numpy as np
import tensorflow as tf

from nlr_tf.models.base_model import NoisyLabelModel
from nlr_tf.models.losses import masked_bce_with_logits, masked_mean
from nlr_tf.models.methods import TRANSITIONS

ANCHOR_PERCENTILE = 97.0  # Patrini et al.'s robust anchor: a high percentile rather than the maximum
_EPS = 1e-7


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


def transition_from_pairs(noisy: np.ndarray, verified: np.ndarray, mask: np.ndarray, multi_label: bool) -> np.ndarray:
    """T counted from images that carry both noisy and verified labels (Hu's Forward row).

    Args:
        noisy, verified, mask: float [N, d] multi-hot noisy labels, verified
            labels and which entries are verified.
        multi_label: bool.

    Single-label: row i is the distribution of the noisy label among the
    images verified to be class i (the identity for a class never verified).
    Multi-label: per class, the share of verified negatives labelled
    positive and of verified positives left unlabelled (0 when unknown).
    """
    noisy, verified, mask = (np.asarray(a, np.float64) for a in (noisy, verified, mask))
    d = noisy.shape[1]
    if multi_label:
        pos, neg = verified * mask, (1.0 - verified) * mask
        fp = np.divide((neg * noisy).sum(0), neg.sum(0), out=np.zeros(d), where=neg.sum(0) > 0)
        miss = np.divide((pos * (1.0 - noisy)).sum(0), pos.sum(0), out=np.zeros(d), where=pos.sum(0) > 0)
        return np.stack([fp, miss]).astype(np.float32)
    rows = (verified * mask).sum(1) == 1  # images verified to be exactly one class ...
    rows &= noisy.sum(1) == 1  # ... with exactly one noisy label
    counts = (verified[rows] * mask[rows]).T @ noisy[rows]  # [true, noisy]
    totals = counts.sum(1, keepdims=True)
    transition = np.where(totals > 0, counts / np.maximum(totals, 1), np.eye(d))
    return transition.astype(np.float32)


def transition_from_anchors(scores: np.ndarray, multi_label: bool, percentile: float = ANCHOR_PERCENTILE) -> np.ndarray:
    """Patrini et al.'s estimator: T read off a noisy model's predictions at anchor points.

    Args:
        scores: float [N, d]. A model trained on noisy labels, on the noisy
            set: estimates of P(noisy label | x).
        multi_label: bool.
        percentile: float. The anchor of class i is the image at this
            percentile of `scores[:, i]` (not the maximum: robust to outliers).

    Single-label: row i of T is the prediction at class i's anchor
    (renormalized). Multi-label, per class: the prediction at the high
    anchor estimates 1 - miss rate, the one at the low anchor (the mirrored
    percentile) the false-positive rate.
    """
    scores = np.asarray(scores, np.float64)
    d = scores.shape[1]
    if multi_label:
        hi = np.array([np.percentile(scores[:, j], percentile, method="nearest") for j in range(d)])
        lo = np.array([np.percentile(scores[:, j], 100.0 - percentile, method="nearest") for j in range(d)])
        return np.clip(np.stack([lo, 1.0 - hi]), 0.0, 1.0).astype(np.float32)
    transition = np.zeros((d, d))
    for i in range(d):
        target = np.percentile(scores[:, i], percentile, method="nearest")
        anchor = int(np.argmin(np.abs(scores[:, i] - target)))
        transition[i] = scores[anchor] / scores[anchor].sum()
    return transition.astype(np.float32)


@keras.saving.register_keras_serializable(package="nlr_tf")
class ForwardModel(NoisyLabelModel):
    """Backbone + classifier, its loss on noisy labels taken through the noise transition T.

    The classifier `p` (softmax for single-label data, per-class sigmoid for
    multi-label) is what the model serves; noisy-set examples are fit to
    their noisy labels through `p_noisy = T(p)` (`NoiseTransition`), so
    that p itself learns the clean labels. Clean-set examples, if the batch
    mix has any, are fit to their verified labels directly. T is estimated
    once before training (`fit_before_training`): from the clean set's
    paired noisy and verified labels (`--transition=clean_pairs`, as Hu et
    al. 2019's Forward row) or from the starting noisy model's predictions
    at anchor points (`--transition=anchor`, Patrini et al.'s estimator).

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
    training_options = ("transition",)

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
    @classmethod
    def config_error(cls, config, info):
        if config.transition not in TRANSITIONS:
            return f"--transition must be one of {', '.join(TRANSITIONS)}, got {config.transition!r}"
        if config.transition == "clean_pairs" and not info.has_split(config.clean_split):
            return (
                f"--transition=clean_pairs counts T from the paired labels of split {config.clean_split!r}, "
                f"absent from dataset {config.dataset!r}"
            )
        if config.transition == "anchor" and not config.init_checkpoint:
            return "--transition=anchor reads T off a noisy model's predictions: pass --init_checkpoint"
        return None

    def fit_before_training(self, data, config, resumed=False) -> dict:
        """Estimates T (see the class docstring); returns it for the run's record."""
        if resumed:  # T is a weight: the checkpoint restored it
            return {}
        from nlr_tf.data.parsing import label_arrays
        from nlr_tf.models import prediction

        if config.transition == "clean_pairs":
            labels = label_arrays(data.split_files(config.clean_split), self.num_classes)
            transition = transition_from_pairs(
                labels["noisy_labels"], labels["verified_labels"], labels["verified_mask"], self.multi_label
            )
        else:  # the starting (noisy) model's own predictions on the noisy set
            scores = prediction.predict(
                self, data, config.noisy_split, backbone=config.backbone, image_size=config.image_size
            )["scores"]
            transition = transition_from_anchors(scores, self.multi_label)
        self.noise_transition.set_transition(transition)
        return {"transition": transition.tolist(), "transition_source": config.transition}

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
