"""Misra et al. 2016: visual presence as a latent variable behind human-centric (noisy) labels."""

import keras
import tensorflow as tf

from nlr_tf.models.base_model import NoisyLabelModel
from nlr_tf.models.losses import masked_mean

SERVED_OUTPUTS = ("visual", "relevance")
_EPS = 1e-7


@keras.saving.register_keras_serializable(package="nlr_tf")
class MisraModel(NoisyLabelModel):
    """A visual classifier and a relevance classifier, trained on noisy labels only.

    Each class has a latent visual presence v: a human-centric label h (the
    noisy label) depends on the image through v,

        P(h=1 | x) = sum_v P(h=1 | v, x) P(v | x)
                   = r_1(x) p_v(x) + r_0(x) (1 - p_v(x)),

    with `p_v = sigma(w_v f)` the visual classifier and `r_v = sigma(w_{r,v}
    f)` the relevance of a present (v=1) or absent (v=0) object to the
    annotator. Only P(h=1 | x) meets a label: binary cross-entropy against
    the noisy labels, every class of every noisy-set example. The visual
    classifier scores with `p_v` (`serve="visual"`), the relevance classifier
    with `P(h=1 | x)` (`serve="relevance"`): Veit et al. 2017 Table 2's
    rows 2 and 3.

    Outputs: `scores` (the served one), `visual_scores` and
    `relevance_scores`, [B, d].

    Args:
        backbone: `keras.Model`. Images to features.
        num_classes: int. Number of classes d.
        serve: str. "visual" or "relevance" ("" or None: "visual").
        **kwargs: standard model arguments.

    Reference:
        Misra et al., Seeing through the Human Reporting Bias: Visual
        Classifiers from Noisy Human-Centric Labels, CVPR 2016, Sec. 3.
    """

    family = "misra"
    head_part = "classifier"

    def __init__(self, backbone, num_classes, serve="visual", **kwargs):
        serve = serve or "visual"
        if serve not in SERVED_OUTPUTS:
            raise ValueError(f"`serve` must be one of {SERVED_OUTPUTS}. Received: serve={serve}")
        # === Layers ===
        # The visual classifier keeps the name of the noisy model's classifier, which it starts from.
        self.classifier = keras.layers.Dense(num_classes, name="classifier")
        self.relevance = keras.layers.Dense(2 * num_classes, name="relevance")  # r_0 and r_1 per class
        # === Functional Model ===
        features = self.features_input(backbone)
        visual = keras.layers.Activation("sigmoid", name="visual_scores")(self.classifier(features))
        r = keras.layers.Activation("sigmoid", name="relevance_given_v")(self.relevance(features))
        r_absent, r_present = keras.ops.split(r, 2, axis=-1)
        relevance = keras.layers.Add(name="relevance_scores")(
            [keras.layers.Multiply()([r_present, visual]), keras.layers.Multiply()([r_absent, 1.0 - visual])]
        )
        served = visual if serve == "visual" else relevance
        scores = keras.layers.Identity(name="scores")(served)
        heads = keras.Model(
            features,
            {"scores": scores, "visual_scores": visual, "relevance_scores": relevance},
            name="heads",
        )
        super().__init__(backbone, heads, num_classes, **kwargs)
        # === Config ===
        self.serve = serve

    def part_layers(self):
        return {"backbone": [self.backbone], "classifier": [self.classifier, self.relevance]}

    def losses_on_batch(self, batch, training=True):
        """Binary cross-entropy of P(h=1 | x) against the noisy labels (this replica's share)."""
        _, noisy_mask, _ = self.split_masks(batch, self.num_classes)
        out = self.heads(self.features(batch, training=training), training=training)
        p = tf.clip_by_value(out["relevance_scores"], _EPS, 1.0 - _EPS)
        labels = tf.cast(batch["noisy_labels"], p.dtype)
        per_entry = -(labels * tf.math.log(p) + (1.0 - labels) * tf.math.log(1.0 - p))
        return masked_mean(per_entry, noisy_mask)

    def train_step(self, batch):
        with self.gradient_tape() as tape:
            loss = self.losses_on_batch(batch)
        self.apply_part_gradients(tape, loss)
        return {"loss": loss}

    def get_config(self):
        config = super().get_config()
        config.update({"serve": self.serve})
        return config
