"""The base of every method model: a backbone, heads, and part-wise updates.

A model maps images to class scores in [0, 1] (`call`), and knows how to
take one training step on a mixed batch (`train_step`, one per method
family). Its variables are grouped into named parts ("backbone",
"classifier", "cleaning", "heads"), each updated by its own optimizer, so
that each part can have the learning rate the papers give it and frozen
parts are left alone. When a batch carries cached `features` instead of
`image`s, the backbone is skipped.
"""

from typing import Optional

import keras
import tensorflow as tf


class NoisyLabelModel(keras.Model):
    """Backbone plus method heads; subclasses define the heads and the step.

    Args:
        backbone: `keras.Model` mapping images [B, S, S, 3] to features [B, F].
        num_classes: int. Number of classes d.
        **kwargs: standard model arguments.
    """

    family = ""
    # The keys of the dict `train_step` returns (and `pretrain_step`, where
    # a family has one); the trainer averages and logs them.
    loss_names: tuple[str, ...] = ("loss",)
    pretrain_loss_names: tuple[str, ...] = ()

    def __init__(self, backbone, num_classes, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.part_optimizers: dict[str, keras.optimizers.Optimizer] = {}

    # === Forward ===
    def features(self, batch, training=False):
        """Cached features if the batch has them, else the backbone's."""
        if "features" in batch:
            return batch["features"]
        return self.backbone(batch["image"], training=training and self.backbone.trainable)

    def scores_from_features(self, features):
        raise NotImplementedError(f"{type(self).__name__} must define scores_from_features (features -> scores)")

    def call(self, images, training=False):
        return self.scores_from_features(self.backbone(images, training=training and self.backbone.trainable))

    # === Parts and optimizers ===
    def part_layers(self) -> dict[str, list[keras.layers.Layer]]:
        """Named groups of layers, each with its own optimizer."""
        raise NotImplementedError(f"{type(self).__name__} must define part_layers (part name -> layers)")

    def part_variables(self, part: str) -> list:
        return [v for layer in self.part_layers()[part] for v in layer.trainable_variables]

    def set_part_optimizers(self, optimizers: dict[str, keras.optimizers.Optimizer]) -> None:
        """Assigns one optimizer per trained part and builds it (in the strategy scope)."""
        unknown = set(optimizers) - set(self.part_layers())
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)} for {self.family}; parts: {sorted(self.part_layers())}")
        for part, optimizer in optimizers.items():
            variables = self.part_variables(part)
            if not variables:
                raise ValueError(f"part {part!r} has no trainable variables (is it frozen?)")
            optimizer.build(variables)
        self.part_optimizers = dict(optimizers)

    def apply_part_gradients(self, tape: tf.GradientTape, loss: tf.Tensor, parts: Optional[list[str]] = None) -> None:
        """Differentiates `loss` and lets each part's optimizer apply its share."""
        parts = [p for p in (parts or self.part_optimizers) if p in self.part_optimizers]
        variables = [self.part_variables(p) for p in parts]
        grads = tape.gradient(loss, [v for vs in variables for v in vs])
        start = 0
        for part, vs in zip(parts, variables):
            self.part_optimizers[part].apply_gradients(zip(grads[start : start + len(vs)], vs))
            start += len(vs)

    # === Mixed-batch helpers ===
    @staticmethod
    def split_masks(batch, num_classes):
        """Masks [B, d]: every entry of noisy-set examples; verified entries of clean-set ones."""
        is_clean = tf.cast(batch["is_clean"], tf.float32)[:, None]
        noisy_mask = tf.broadcast_to(1.0 - is_clean, tf.shape(batch["noisy_labels"]))
        clean_mask = is_clean * tf.cast(batch["verified_mask"], tf.float32)
        return is_clean, noisy_mask, clean_mask

    def get_config(self):
        config = super().get_config()
        config.update({"backbone": keras.saving.serialize_keras_object(self.backbone), "num_classes": self.num_classes})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
