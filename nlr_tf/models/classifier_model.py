"""The one-head sigmoid classifier: the baselines of both papers."""

import keras
import tensorflow as tf

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

    Args:
        backbone: `keras.Model`. Images to features.
        num_classes: int. Number of classes d.
        **kwargs: standard model arguments.
    """

    family = "classifier"

    def __init__(self, backbone, num_classes, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.classifier = keras.layers.Dense(num_classes, name="classifier")

    def build(self, input_shape=None):
        self.classifier.build(self.backbone.output.shape)
        self.built = True

    def logits(self, features):
        return self.classifier(features)

    def scores_from_features(self, features):
        return tf.sigmoid(self.logits(features))

    def part_layers(self):
        return {"backbone": [self.backbone], "classifier": [self.classifier]}

    def train_step(self, batch):
        _, noisy_mask, clean_mask = self.split_masks(batch, self.num_classes)
        targets = noisy_mask * batch["noisy_labels"] + clean_mask * batch["verified_labels"]
        with tf.GradientTape() as tape:
            logits = self.logits(self.features(batch, training=True))
            loss = masked_bce_with_logits(targets, logits, noisy_mask + clean_mask)
        self.apply_part_gradients(tape, loss)
        return {"loss": loss}
