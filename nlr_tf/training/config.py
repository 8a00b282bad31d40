"""`TrainConfig`: everything a training run varies, in one place.

Each field carries its default and its `nlr-train` flag's help text, type
and bounds (`flag` metadata, `nlr_tf.models.options.option`); the binary
defines its flags from these fields, so a field, its default and its flag
cannot drift apart. Each family's options are declared once, by the family
(`nlr_tf.models.methods`), and join the config as flat fields of the same
name, their flags' help tagged with the families that read them. The
module imports no TensorFlow: `nlr-train --help` stays fast.
"""

import dataclasses
from typing import Optional

from nlr_tf.backbones.sizes import BACKBONES
from nlr_tf.models.methods import FAMILIES, METHODS, PRECISIONS, Family
from nlr_tf.models.options import flag_spec, option

OPTIMIZERS = ("rmsprop", "adam", "sgd")
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
EVAL_METRICS = ("mAP", "APall", "top1")
# Where a family's options sit among the fields, which is the flagfiles' order: after `init_checkpoint`, unless named.
OPTIONS_AFTER = {"label_cleaning": "backbone_learning_rate"}
_DEFAULT_PLACE = "init_checkpoint"


def family_option_fields(families: list[Family]) -> dict[str, tuple[type, dataclasses.Field, str]]:
    """Each option of `families`, merged across the families that declare it: name -> (type, field, first family).

    The field's flag help is each declaring family's help tagged with its
    name ("noise_regularization: ...; misra: ..."), its choices the union
    of theirs; type, default, bounds and whether it has choices must agree.
    """
    merged: dict[str, dict] = {}
    for family in families:
        for f in family.option_fields():
            spec = flag_spec(f)
            shape = (f.type, f.default, spec["lower"], spec["upper"], spec["choices"] is None)
            entry = merged.setdefault(f.name, {"shape": shape, "helps": [], "choices": (), "family": family.name})
            if entry["shape"] != shape:
                raise ValueError(f"option {f.name!r} of {family.name} differs from {entry['family']}'s")
            entry["helps"].append(f"{family.name}: {spec['help'].rstrip('.')}")
            entry["choices"] = tuple(dict.fromkeys((*entry["choices"], *(spec["choices"] or ()))))
    fields = {}
    for name, entry in merged.items():
        type_, default, lower, upper, no_choices = entry["shape"]
        help_text = "; ".join(entry["helps"]) + "."
        field = option(default, help_text, choices=None if no_choices else entry["choices"], lower=lower, upper=upper)
        fields[name] = (type_, field, entry["family"])
    return fields


def _with_family_options(cls):
    """The dataclass `cls` made again with every family's options as flat fields (placed as `OPTIONS_AFTER` says)."""
    names = [f.name for f in dataclasses.fields(cls)]
    options = family_option_fields(list(FAMILIES.values()))
    placed: dict[str, list] = {}
    for name, (type_, field, family) in options.items():
        place = OPTIONS_AFTER.get(family, _DEFAULT_PLACE)
        if place not in names or name in names:
            raise ValueError(f"{family}'s option {name!r} after {place!r}: not a place among {cls.__name__}'s fields")
        placed.setdefault(place, []).append((name, type_, field))
    fields = []
    for f in dataclasses.fields(cls):
        kwargs = {} if f.default is dataclasses.MISSING else {"default": f.default}
        fields += [(f.name, f.type, dataclasses.field(metadata=f.metadata, **kwargs)), *placed.get(f.name, [])]
    namespace = {"__doc__": cls.__doc__, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return dataclasses.make_dataclass(cls.__name__, fields, namespace=namespace)


@_with_family_options
@dataclasses.dataclass
class TrainConfig:
    """Everything a training run varies; each field is the `nlr-train` flag of the same name.

    The families' options (`alpha`, `transition`, `serve`, ...) are fields too, added from their declarations
    (`nlr_tf.models.methods`): after `init_checkpoint`, and label_cleaning's after `backbone_learning_rate`.
    """

    # === What to train, on what ===
    method: str = option(None, "Method or baseline (see README).", choices=tuple(METHODS), required=True)
    dataset: str = option(None, "Dataset folder made by nlr-make-tfrecords.", required=True)
    model_dir: str = option(None, "Checkpoints, TensorBoard logs and the final model go here.", required=True)

    # === Model ===
    backbone: str = option("small_cnn", "Backbone network.", choices=BACKBONES)
    backbone_weights: str = option(
        "none",
        "none, imagenet (from the Keras cache, downloaded there by the configuration checks when absent), "
        "or a path to a Keras .h5 file.",
    )
    image_size: int = option(0, "Input side (0: the backbone's default).", lower=0)
    train_backbone: Optional[bool] = option(
        None, "Train the backbone (default: the method's, or the papers' scheme for the data)."
    )
    init_checkpoint: str = option("", "A trained `noisy` model dir (or checkpoint prefix) to start from.")

    # === Optimization ===
    optimizer: str = option("adam", "Optimizer of every part.", choices=OPTIMIZERS)
    learning_rate: float = option(1e-3, "Learning rate of the classifier / heads.", lower=0.0)
    backbone_learning_rate: float = option(0.0, "Learning rate of a trained backbone (0: --learning_rate).", lower=0.0)
    lr_decay_rate: float = option(1.0, "Learning-rate decay factor (1 = none).", lower=0.0, upper=1.0)
    lr_decay_epochs: float = option(2.0, "Epochs between decays.", lower=0.0)
    batch_size: int = option(
        40, "Global batch size (the default splits into every method's noisy:clean mix on 1, 2 or 4 replicas).", lower=1
    )
    train_steps: int = option(1000, "Total training steps.", lower=1)
    mix_ratio: str = option("", "noisy:clean examples per batch (default: the method's).")
    noisy_split: str = option("noisy", "Split with noisy labels.")
    clean_split: str = option("clean", "Split with verified labels (clean_all: the upper bound).")

    # === Running ===
    checkpoint_steps: int = option(500, "Steps between checkpoints.", lower=1)
    log_steps: int = option(50, "Steps between TensorBoard scalars.", lower=1)
    eval_split: str = option("", "Split evaluated during training (e.g. val); empty: none.")
    eval_steps: int = option(
        0, "Steps between evaluations on --eval_split (0: none); mAP/APall/top-1 go to MODEL_DIR/eval_SPLIT.", lower=0
    )
    eval_metric: str = option(
        "", "Metric that picks the best evaluation ('': mAP, or top1 if single-label).", choices=("", *EVAL_METRICS)
    )
    early_stopping_patience: int = option(
        0, "Stop after this many evaluations without a better --eval_metric (0: train every step).", lower=0
    )
    restore_best: bool = option(
        False, "The final model.keras holds the weights of the best evaluation, not the last step."
    )
    max_checkpoints: int = option(
        3, "Checkpoints kept in MODEL_DIR/checkpoints (at least 2: a damaged last one leaves the one before).", lower=2
    )
    strategy: str = option("default", "tf.distribute strategy.", choices=STRATEGIES)
    tpu: str = option("", "TPU name or address for --strategy=tpu.")
    devices: tuple[str, ...] = option((), "Devices for --strategy=mirrored (default: all GPUs).")
    seed: int = option(0, "Seed of the input order and initialization.")
    deterministic: bool = option(False, "Deterministic input order and ops (slower).")
    mixed_precision: str = option(
        "none",
        "Keras dtype policy of the backbone: mixed_bfloat16 (TPU, recent GPUs) or mixed_float16 (GPU; each "
        "part's optimizer gets dynamic loss scaling). Heads, losses and metrics stay float32.",
        choices=PRECISIONS,
    )
    jit_compile: bool = option(False, "Compile the training and evaluation steps with XLA.")
    augment: bool = option(False, "Random crops.")
    random_flip: bool = option(False, "Random horizontal flips (with --augment).")
    feature_cache: str = option("", "Feature cache folder (built here when absent).")
    cache_dtype: str = option(
        "",
        "dtype of the --feature_cache's features: float16 halves its size. nlr-train builds an absent cache in "
        "it and refuses an existing cache of another dtype ('': float32 when building, either when reading).",
        choices=("", "float32", "float16"),
    )


def flag_fields() -> list[dataclasses.Field]:
    """`TrainConfig`'s fields, in the order of their flags."""
    return list(dataclasses.fields(TrainConfig))
