"""`TrainConfig`: everything a training run varies, in one place.

Each field carries its default and its `nlr-train` flag's help text, type
and bounds (`flag` metadata); the binary defines its flags from these
fields, so a field, its default and its flag cannot drift apart. The
module imports no TensorFlow: `nlr-train --help` stays fast.
"""

import dataclasses
from typing import Any, Optional

from nlr_tf.data.image_sizes import BACKBONES
from nlr_tf.models.methods import ACTIVATIONS, METHODS, PRECISIONS, TRANSITIONS

OPTIMIZERS = ("rmsprop", "adam", "sgd")
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
EVAL_METRICS = ("mAP", "APall", "top1")


def _field(default: Any, help: str, *, choices=None, lower=None, upper=None, required: bool = False):
    """A dataclass field with its flag's description (`required` fields have no default)."""
    flag = {"help": help, "choices": choices, "lower": lower, "upper": upper}
    if required:
        return dataclasses.field(metadata={"flag": flag})
    return dataclasses.field(default=default, metadata={"flag": flag})


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run varies; each field is the `nlr-train` flag of the same name."""

    # === What to train, on what ===
    method: str = _field(None, "Method or baseline (see README).", choices=tuple(METHODS), required=True)
    dataset: str = _field(None, "Dataset folder made by nlr-make-tfrecords.", required=True)
    model_dir: str = _field(None, "Checkpoints, TensorBoard logs and the final model go here.", required=True)

    # === Model ===
    backbone: str = _field("small_cnn", "Backbone network.", choices=BACKBONES)
    backbone_weights: str = _field(
        "none",
        "none, imagenet (from the Keras cache, downloaded there by the configuration checks when absent), "
        "or a path to a Keras .h5 file.",
    )
    image_size: int = _field(0, "Input side (0: the backbone's default).", lower=0)
    train_backbone: Optional[bool] = _field(
        None, "Train the backbone (default: the method's, or the papers' scheme for the data)."
    )
    init_checkpoint: str = _field("", "A trained `noisy` model dir (or checkpoint prefix) to start from.")
    activation: str = _field("sigmoid", "noise_regularization: the nets' activation.", choices=ACTIVATIONS)
    alpha: float = _field(0.2, "noise_regularization: weight of L_clean (0 = h alone).", lower=0.0)
    hidden_dim: int = _field(512, "noise_regularization: hidden width of each net.", lower=1)
    serve: str = _field(
        "",
        "The output a model scores with: noise_regularization g or h (default: h when alpha=0, else g); "
        "misra visual or relevance (default: visual).",
        choices=("", "g", "h", "visual", "relevance"),
    )
    transition: str = _field(
        "clean_pairs",
        "forward: how the noise transition T is estimated: from the clean set's paired noisy and verified "
        "labels, or from the starting noisy model's predictions at anchor points.",
        choices=TRANSITIONS,
    )
    reference_features: str = _field(
        "",
        "cleannet: feature cache of a model trained on the noisy labels (nlr-extract-features), whose features "
        "CleanNet embeds (default: --feature_cache).",
    )
    cleannet_steps: int = _field(4000, "cleannet: steps of CleanNet's training, before the classifier's.", lower=1)

    # === Optimization ===
    optimizer: str = _field("adam", "Optimizer of every part.", choices=OPTIMIZERS)
    learning_rate: float = _field(1e-3, "Learning rate of the classifier / heads.", lower=0.0)
    backbone_learning_rate: float = _field(0.0, "Learning rate of a trained backbone (0: --learning_rate).", lower=0.0)
    cleaning_learning_rate: float = _field(
        0.015, "label_cleaning: cleaning network rate (joint, or while pretraining).", lower=0.0
    )
    cleaning_joint_learning_rate: float = _field(
        0.001, "label_cleaning: cleaning network rate after pretraining.", lower=0.0
    )
    cleaning_pretrain_steps: int = _field(
        0, "label_cleaning: steps training the cleaning net alone first (0 = joint).", lower=0
    )
    lr_decay_rate: float = _field(1.0, "Learning-rate decay factor (1 = none).", lower=0.0, upper=1.0)
    lr_decay_epochs: float = _field(2.0, "Epochs between decays.", lower=0.0)
    batch_size: int = _field(
        40, "Global batch size (the default splits into every method's noisy:clean mix on 1, 2 or 4 replicas).", lower=1
    )
    train_steps: int = _field(1000, "Total training steps.", lower=1)
    mix_ratio: str = _field("", "noisy:clean examples per batch (default: the method's).")
    noisy_split: str = _field("noisy", "Split with noisy labels.")
    clean_split: str = _field("clean", "Split with verified labels (clean_all: the upper bound).")

    # === Running ===
    checkpoint_steps: int = _field(500, "Steps between checkpoints.", lower=1)
    log_steps: int = _field(50, "Steps between TensorBoard scalars.", lower=1)
    eval_split: str = _field("", "Split evaluated during training (e.g. val); empty: none.")
    eval_steps: int = _field(
        0, "Steps between evaluations on --eval_split (0: none); mAP/APall/top-1 go to MODEL_DIR/eval_SPLIT.", lower=0
    )
    eval_metric: str = _field(
        "", "Metric that picks the best evaluation ('': mAP, or top1 if single-label).", choices=("", *EVAL_METRICS)
    )
    early_stopping_patience: int = _field(
        0, "Stop after this many evaluations without a better --eval_metric (0: train every step).", lower=0
    )
    restore_best: bool = _field(
        False, "The final model.keras holds the weights of the best evaluation, not the last step."
    )
    max_checkpoints: int = _field(3, "Checkpoints kept in MODEL_DIR/checkpoints.", lower=1)
    strategy: str = _field("default", "tf.distribute strategy.", choices=STRATEGIES)
    tpu: str = _field("", "TPU name or address for --strategy=tpu.")
    devices: tuple[str, ...] = _field((), "Devices for --strategy=mirrored (default: all GPUs).")
    seed: int = _field(0, "Seed of the input order and initialization.")
    deterministic: bool = _field(False, "Deterministic input order and ops (slower).")
    mixed_precision: str = _field(
        "none",
        "Keras dtype policy of the backbone: mixed_bfloat16 (TPU, recent GPUs) or mixed_float16 (GPU; each "
        "part's optimizer gets dynamic loss scaling). Heads, losses and metrics stay float32.",
        choices=PRECISIONS,
    )
    jit_compile: bool = _field(False, "Compile the training and evaluation steps with XLA.")
    augment: bool = _field(False, "Random crops.")
    random_flip: bool = _field(False, "Random horizontal flips (with --augment).")
    feature_cache: str = _field("", "Feature cache folder (built here when absent).")
    cache_dtype: str = _field(
        "",
        "dtype of the --feature_cache's features: float16 halves its size. nlr-train builds an absent cache in "
        "it and refuses an existing cache of another dtype ('': float32 when building, either when reading).",
        choices=("", "float32", "float16"),
    )


def flag_fields() -> list[dataclasses.Field]:
    """`TrainConfig`'s fields, in the order of their flags."""
    return list(dataclasses.fields(TrainConfig))
