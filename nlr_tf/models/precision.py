"""Mixed precision: a Keras dtype policy on a method model's backbone.

`--mixed_precision=mixed_bfloat16` (TPUs, recent GPUs) or `mixed_float16`
(GPUs) sets the backbone's layers to Keras' mixed dtype policy: they keep
float32 variables and compute in the lower precision, where nearly all of a
step's arithmetic is. The heads (the layers that produce logits and scores:
a few dense layers on the pooled features, well under 1 % of a step) keep
the float32 policy, so logits, losses and metrics are float32, as Keras'
mixed-precision guide asks of a model's outputs: the heads cast the
backbone's features to float32 as they take them.

The policy is how a model runs, not what it learned: the variables are
float32 under every policy, so a model trained under one policy can be
evaluated or exported under another (`apply_precision` sets it again after
loading). `nlr-export` always serves float32.

Under `mixed_float16`, the trainer wraps each part's optimizer in Keras'
`LossScaleOptimizer` (dynamic loss scaling); `NoisyLabelModel.
apply_part_gradients` scales the loss by each part's own scale.
"""

import keras

from nlr_tf.backbones.scaling import BackbonePreprocessing
from nlr_tf.models.methods import PRECISIONS


def keras_policy(precision: str) -> str:
    """The Keras dtype policy name of a `--mixed_precision` value ("none" is float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision; choose one of {', '.join(PRECISIONS)}. Received: {precision}")
    return "float32" if precision == "none" else precision


def apply_precision(model, precision: str) -> None:
    """Sets the backbone of `model` (a `NoisyLabelModel`, or a backbone itself) to `precision`'s policy.

    Every other layer of a method model stays (or becomes again) float32.
    Call it before the model's first traced call: a `tf.function` traced
    before keeps the dtypes it was traced with.
    """
    policy = keras_policy(precision)
    backbone = getattr(model, "backbone", model)
    in_backbone = {id(layer) for layer in backbone._flatten_layers(include_self=False)}
    for layer in model._flatten_layers(include_self=False):
        # Models only route tensors; their layers carry the policy. The input scaling stays float32.
        if isinstance(layer, (keras.Model, keras.layers.InputLayer, BackbonePreprocessing)):
            continue
        layer.dtype_policy = policy if id(layer) in in_backbone else "float32"


def backbone_precision(model) -> str:
    """The `--mixed_precision` value the backbone of `model` runs under."""
    backbone = getattr(model, "backbone", model)
    names = {
        layer.dtype_policy.name
        for layer in backbone._flatten_layers(include_self=False)
        if layer.weights and not isinstance(layer, keras.Model)
    }
    (name,) = names or {"float32"}
    return "none" if name == "float32" else name


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, precision: str) -> keras.optimizers.Optimizer:
    """Wraps `optimizer` in a dynamic `LossScaleOptimizer` under `mixed_float16`; as it is otherwise."""
    if precision != "mixed_float16":
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer, name=f"{optimizer.name}_loss_scale")
