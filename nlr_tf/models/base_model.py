"""The base of every method model: a functional graph, part-wise updates and what a model declares.

A method model is a Keras functional model, built in keras-hub's
functional-subclass style: images -> `backbone` -> `heads` -> named outputs
(`scores` in [0, 1] first, then what the family adds, such as logits). The
heads are a functional model of their own (features -> the same outputs),
which feature-cache training calls directly: when a batch carries cached
`features` instead of `image`s, the backbone is skipped.

Each model knows how to take one training step on a mixed batch
(`train_step`, one per family) and declares what the training and
evaluation code needs to ask it:

- `part_layers()`: named groups of layers ("backbone", "classifier",
  "cleaning", "heads"), each updated by its own optimizer so that each part
  can have the learning rate the papers give it and frozen parts are left
  alone; `head_part` is the one `--learning_rate` drives;
- `loss_names`: the keys of the dict `train_step` returns;
- `extra_outputs`: predictions besides the scores that need more than the
  image (label cleaning's c-hat needs the noisy labels), computed by
  `extra_output_values`;
- `needs_ids`: its train step looks each training example up by id.

A model never receives the `TrainConfig` and never writes a file: what its
family does around training (option checks, estimates before the first
step such as forward correction's T, the files it keeps, phases such as
label cleaning's pretraining, other parts' learning rates) is its training
task's (`nlr_tf.training.tasks`), which hands the model what it estimated
through the model's setters.
"""

from typing import Optional

import keras
import tensorflow as tf


class NoisyLabelModel(keras.Model):
    """Backbone plus method heads as one functional model; subclasses define the heads and the step.

    Subclasses create their layers and their `heads` model, then call
    `super().__init__(backbone, heads, num_classes, **kwargs)`, which wires
    `heads(backbone(images))` as the model's graph.

    Args:
        backbone: `keras.Model` mapping images [B, S, S, 3] to features [B, F].
        heads: `keras.Model` mapping features [B, F] to a dict of named
            outputs, `scores` [B, d] among them.
        num_classes: int. Number of classes d.
        **kwargs: standard model arguments.
    """

    family = ""
    head_part = "heads"
    # The keys of the dict `train_step` returns; the trainer averages and logs them.
    loss_names: tuple[str, ...] = ("loss",)
    extra_outputs: tuple[str, ...] = ()
    # Whether training batches carry each example's `id` (a family that looks examples up by id).
    needs_ids = False

    def __init__(self, backbone, heads, num_classes, **kwargs):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes}")
        # === Layers ===
        self.backbone = backbone
        self.heads = heads
        # === Functional Model ===
        inputs = backbone.input
        outputs = heads(backbone(inputs))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        # === Config ===
        self.num_classes = num_classes
        self.part_optimizers: dict[str, keras.optimizers.Optimizer] = {}

    @staticmethod
    def features_input(backbone) -> keras.KerasTensor:
        """The input of a heads model: the backbone's features."""
        return keras.Input(backbone.output.shape[1:], name="features")

    # === Forward ===
    def features(self, batch, training=False):
        """Cached features if the batch has them, else the backbone's."""
        if "features" in batch:
            return batch["features"]
        return self.backbone(batch["image"], training=training and self.backbone.trainable)

    def extra_output_values(self, batch, features) -> dict[str, tf.Tensor]:
        """The `extra_outputs` for a batch and its features."""
        return {}

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

    def _loss_scaled(self) -> bool:
        return any(isinstance(o, keras.optimizers.LossScaleOptimizer) for o in self.part_optimizers.values())

    def gradient_tape(self) -> tf.GradientTape:
        """The tape a training step records its loss on (persistent when each part scales the loss on its own)."""
        return tf.GradientTape(persistent=self._loss_scaled())

    def apply_part_gradients(self, tape: tf.GradientTape, loss: tf.Tensor, parts: Optional[list[str]] = None) -> None:
        """Differentiates `loss` and lets each part's optimizer apply its share.

        Under `mixed_float16` each part's optimizer is a `LossScaleOptimizer`:
        its gradients are those of the loss times its own dynamic scale
        (the backward pass runs on the scaled loss), and it unscales them,
        skipping the update and halving the scale when any is not finite.
        """
        parts = [p for p in (parts or self.part_optimizers) if p in self.part_optimizers]
        variables = [self.part_variables(p) for p in parts]
        if self._loss_scaled():
            for part, vs in zip(parts, variables):
                optimizer = self.part_optimizers[part]
                scale = optimizer.scale_loss(tf.ones_like(loss))
                optimizer.apply_gradients(zip(tape.gradient(loss, vs, output_gradients=scale), vs))
            return
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

    # === Config ===
    def get_config(self):
        # Not the functional graph's config: the constructor's arguments, from which the graph is rebuilt.
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
