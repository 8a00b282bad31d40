"""Veit et al. 2017: a label cleaning network trained jointly with a classifier."""

import keras
import tensorflow as tf

from nlr_tf.layers.label_cleaning import LabelCleaning
from nlr_tf.models.base_model import NoisyLabelModel
from nlr_tf.models.losses import masked_bce_with_logits, masked_l1

CLEAN_LOSS_WEIGHT = 0.1
CLASSIFY_LOSS_WEIGHT = 1.0


@keras.saving.register_keras_serializable(package="nlr_tf")
class LabelCleaningModel(NoisyLabelModel):
    """Image classifier `p = sigma(w f)` taught by a label cleaning network.

    The cleaning network maps (noisy labels y, features f) to cleaned labels
    `c = clip(y + g'(y, f), 0, 1)`. Losses, on a batch mixing the noisy set
    T and the verified set V:

    - `L_clean = sum_{i in V} |c_i - v_i|` over verified classes;
    - `L_classify = sum_{j in T} BCE(stopgrad(c_j), p_j) + sum_{i in V} BCE(v_i, p_i)`;
    - total `0.1 L_clean + 1.0 L_classify`.

    The cleaned labels are constants for the classifier: the cleaning
    network learns only from `L_clean`, which prevents the trivial all-zero
    solution. During the optional pretraining phase (`pretrain_step`, which
    its training task schedules) only the cleaning network trains, on
    `L_clean`. Each sum is normalized by its number of counted entries.

    Outputs: `scores` (p) and `logits` (w f), [B, d]. The cleaned labels
    need the noisy labels as well as the image: `cleaner` is their own
    functional model ([noisy labels, features] -> c), and `extra_outputs`
    names them ("cleaned") for prediction.

    Args:
        backbone: `keras.Model`. Images to features.
        num_classes: int. Number of classes d.
        label_embedding_dim, feature_embedding_dim, hidden_dim: int. Sizes
            of the cleaning network (see `LabelCleaning`).
        **kwargs: standard model arguments.

    Reference:
        Veit et al., Learning From Noisy Large-Scale Datasets With Minimal
        Supervision, CVPR 2017, Sec. 3.2, Eqs. 2-3.
    """

    family = "label_cleaning"
    head_part = "classifier"
    loss_names = ("loss", "clean_loss", "classify_loss")
    extra_outputs = ("cleaned",)

    def __init__(
        self, backbone, num_classes, label_embedding_dim=128, feature_embedding_dim=128, hidden_dim=256, **kwargs
    ):
        # === Layers ===
        self.classifier = keras.layers.Dense(num_classes, name="classifier")
        self.cleaning = LabelCleaning(
            num_classes,
            label_embedding_dim=label_embedding_dim,
            feature_embedding_dim=feature_embedding_dim,
            hidden_dim=hidden_dim,
            name="cleaning",
        )
        # === Functional Model ===
        features = self.features_input(backbone)
        logits = self.classifier(features)
        scores = keras.layers.Activation("sigmoid", name="scores")(logits)
        heads = keras.Model(features, {"scores": scores, "logits": logits}, name="heads")
        # c-hat needs the noisy labels, which a served image does not have: its own model, beside the graph.
        noisy_labels = keras.Input((num_classes,), name="noisy_labels")
        cleaner_features = self.features_input(backbone)
        self.cleaner = keras.Model(
            [noisy_labels, cleaner_features], self.cleaning([noisy_labels, cleaner_features]), name="cleaner"
        )
        super().__init__(backbone, heads, num_classes, **kwargs)
        # === Config ===
        self.label_embedding_dim = label_embedding_dim
        self.feature_embedding_dim = feature_embedding_dim
        self.hidden_dim = hidden_dim

    def extra_output_values(self, batch, features):
        return {"cleaned": self.cleaner([batch["noisy_labels"], features])}

    def part_layers(self):
        return {"backbone": [self.backbone], "classifier": [self.classifier], "cleaning": [self.cleaning]}

    def losses_on_batch(self, batch, training=True):
        """The two loss terms (this replica's share)."""
        is_clean, noisy_mask, clean_mask = self.split_masks(batch, self.num_classes)
        features = self.features(batch, training=training)
        cleaned = self.cleaner([batch["noisy_labels"], features], training=training)
        clean_loss = masked_l1(batch["verified_labels"], cleaned, clean_mask)
        targets = noisy_mask * tf.stop_gradient(cleaned) + clean_mask * batch["verified_labels"]
        logits = self.heads(features, training=training)["logits"]
        classify_loss = masked_bce_with_logits(targets, logits, noisy_mask + clean_mask)
        return clean_loss, classify_loss

    def train_step(self, batch):
        with self.gradient_tape() as tape:
            clean_loss, classify_loss = self.losses_on_batch(batch)
            loss = CLEAN_LOSS_WEIGHT * clean_loss + CLASSIFY_LOSS_WEIGHT * classify_loss
        self.apply_part_gradients(tape, loss)
        return {"loss": loss, "clean_loss": clean_loss, "classify_loss": classify_loss}

    def pretrain_step(self, batch):
        """Trains the cleaning network alone on the verified examples."""
        is_clean, _, clean_mask = self.split_masks(batch, self.num_classes)
        with self.gradient_tape() as tape:
            cleaned = self.cleaner([batch["noisy_labels"], self.features(batch, training=False)], training=True)
            clean_loss = masked_l1(batch["verified_labels"], cleaned, clean_mask)
        self.apply_part_gradients(tape, clean_loss, parts=["cleaning"])
        return {"loss": clean_loss, "clean_loss": clean_loss}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "label_embedding_dim": self.label_embedding_dim,
                "feature_embedding_dim": self.feature_embedding_dim,
                "hidden_dim": self.hidden_dim,
            }
        )
        return config
