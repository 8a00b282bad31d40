"""The one-head sigmoid classifier: the baselines of both papers."""

import keras

from nlr_tf.models.base_model import NoisyLabelModel
from nlr_tf.models.losses import masked_bce_with_logits


@keras.saving.register_keras_serializable(package="nlr_tf")
class SigmoidClassifier(NoisyLabelModel):
    """Backbone + one d-way sigmoid layer `p = sigma(w f)`.

    Serves the `noisy`, `clean`, `ft_whole`, `ft_last` and `ft_mixed` rows:
    they differ in the data mix, the starting point and which parts train,
    not in the model. Noisy-set examples are fit to their noisy labels (all
    classes), clean-set examples to their verified labels (verified classes
    only); one binary cross-entropy over both.

    Outputs: `scores` (p) and `logits` (w f), [B, d].

    Args:
        backbone: `keras.Model`. Images to features.
        num_classes: int. Number of classes d.
        **kwargs: standard model arguments.

    Example:
    >>> from nlr_tf.backbones.networks import build_backbone
    >>> model = SigmoidClassifier(build_backbone("small_cnn", image_size=16), num_classes=10)
    >>> scores = model(keras.ops.zeros((2, 16, 16, 3)))["scores"]
    """

    family = "classifier"
    head_part = "classifier"

    def __init__(self, backbone, num_classes, **kwargs):
        # === Layers ===
        self.classifier = keras.layers.Dense(num_classes, name="classifier")
        # === Functional Model ===
        features = self.features_input(backbone)
        logits = self.classifier(features)
        scores = keras.layers.Activation("sigmoid", name="scores")(logits)
        heads = keras.Model(features, {"scores": scores, "logits": logits}, name="heads")
        super().__init__(backbone, heads, num_classes, **kwargs)

    def part_layers(self):
        return {"backbone": [self.backbone], "classifier": [self.classifier]}

    def example_masks(self, batch):
        """The entries that count [B, d]: every one of noisy-set examples, the verified ones of clean-set examples."""
        _, noisy_mask, clean_mask = self.split_masks(batch, self.num_classes)
        return noisy_mask, clean_mask

    def entry_weights(self, batch):
        """Weights [B, d] each entry's loss is multiplied by (None: all 1); the mean still counts entries."""
        return None

    def train_step(self, batch):
        noisy_mask, clean_mask = self.example_masks(batch)
        targets = noisy_mask * batch["noisy_labels"] + clean_mask * batch["verified_labels"]
        with self.gradient_tape() as tape:
            logits = self.heads(self.features(batch, training=True), training=True)["logits"]
            loss = masked_bce_with_logits(targets, logits, noisy_mask + clean_mask, self.entry_weights(batch))
        self.apply_part_gradients(tape, loss)
        return {"loss": loss}
