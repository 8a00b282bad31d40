"""The methods and baselines, the model families they train, and each family's options: a registry.

Every row of the papers' tables is a `Method`: its model family, the
default noisy:clean mix of a batch, whether it starts from a trained `noisy`
model (`--init_checkpoint`), which layers it copies from there, and which
parts it trains by default. A `Family` names its model class (a
`NoisyLabelModel` subclass, imported only when a model is built), its
options and which of them (or of `DATASET_OPTIONS`) its model's
constructor takes.

A family's options are declared here once, as the fields of a small frozen
dataclass (`nlr_tf.models.options.option`: default, help, choices,
bounds), by the family that reads them. `TrainConfig` gets a flat field and
`nlr-train` a flag of the same name from that declaration, the flag's help
tagged with the family ("noise_regularization: ..."); the configuration
checks refuse an option set for a method of another family, and a value
outside the family's own choices. An option several families read
(`--serve`) is one flag: each family declares its own choices. What a
family does around training (checks, estimates, files, phases) is its
training task's (`nlr_tf.training.tasks`). Adding a method: one model file,
one `Family` (if it is a new family) and one `Method` entry here, and their
tests.

This module imports no TensorFlow: flag definitions read it.
"""

import dataclasses
import importlib
from typing import Any, Optional

from nlr_tf.layers import ACTIVATIONS
from nlr_tf.models.options import option

# How forward correction estimates its noise transition matrix T.
TRANSITIONS = ("clean_pairs", "anchor")
# Mixed precision: "none" (float32) or a Keras mixed dtype policy (see `nlr_tf.models.precision`).
PRECISIONS = ("none", "mixed_bfloat16", "mixed_float16")
# Options a family takes from the dataset, not from the configuration.
DATASET_OPTIONS = ("multi_label",)


# === Each family's options ===
@dataclasses.dataclass(frozen=True)
class LabelCleaningOptions:
    """label_cleaning's options: its cleaning network's rates and pretraining (read by its training task)."""

    cleaning_learning_rate: float = option(0.015, "cleaning network rate (joint, or while pretraining).", lower=0.0)
    cleaning_joint_learning_rate: float = option(0.001, "cleaning network rate after pretraining.", lower=0.0)
    cleaning_pretrain_steps: int = option(0, "steps training the cleaning net alone first (0 = joint).", lower=0)


@dataclasses.dataclass(frozen=True)
class NoiseRegularizationOptions:
    """noise_regularization's options: its model's arguments."""

    activation: str = option("sigmoid", "the nets' activation.", choices=ACTIVATIONS)
    alpha: float = option(0.2, "weight of L_clean (0 = h alone).", lower=0.0)
    hidden_dim: int = option(512, "hidden width of each net.", lower=1)
    serve: str = option(
        "", "the output it scores with, g or h (default: h when alpha=0, else g).", choices=("", "g", "h")
    )


@dataclasses.dataclass(frozen=True)
class ForwardOptions:
    """forward's option: how its training task estimates T."""

    transition: str = option(
        "clean_pairs",
        "how the noise transition T is estimated: from the clean set's paired noisy and verified labels, or from "
        "the starting noisy model's predictions at anchor points.",
        choices=TRANSITIONS,
    )


@dataclasses.dataclass(frozen=True)
class MisraOptions:
    """misra's option: its model's served output."""

    serve: str = option(
        "", "the output it scores with, visual or relevance (default: visual).", choices=("", "visual", "relevance")
    )


@dataclasses.dataclass(frozen=True)
class CleanNetOptions:
    """cleannet's options: what its training task trains CleanNet on, and for how long."""

    reference_features: str = option(
        "",
        "feature cache of a model trained on the noisy labels (nlr-extract-features), whose features CleanNet "
        "embeds (default: --feature_cache).",
    )
    cleannet_steps: int = option(4000, "steps of CleanNet's training, before the classifier's.", lower=1)


# === Families ===
@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: its model class and its options.

    Args:
        name: str. The family's name (recorded in a run's config.json).
        model: str. "module:Class" of its `NoisyLabelModel` subclass.
        options: a frozen dataclass of `option` fields, or None: the
            options this family alone (or with others, as `serve`) reads.
        model_arguments: tuple of str. The options (or `DATASET_OPTIONS`)
            passed to the model's constructor as keyword arguments of the
            same name; the others are its training task's.
    """

    name: str
    model: str
    options: Optional[type] = None
    model_arguments: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = set(self.model_arguments) - set(self.option_names()) - set(DATASET_OPTIONS)
        if unknown:
            raise ValueError(f"model arguments of {self.name} that are no option of it: {sorted(unknown)}")

    def option_fields(self) -> tuple[dataclasses.Field, ...]:
        """The family's options, in their declared order."""
        return dataclasses.fields(self.options) if self.options is not None else ()

    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.option_fields())

    def model_class(self):
        module, name = self.model.split(":")
        return getattr(importlib.import_module(module), name)


FAMILIES = {
    f.name: f
    for f in (
        Family(name="classifier", model="nlr_tf.models.classifier:SigmoidClassifier"),
        Family(
            name="label_cleaning",
            model="nlr_tf.models.label_cleaning:LabelCleaningModel",
            options=LabelCleaningOptions,
        ),
        Family(
            name="noise_regularization",
            model="nlr_tf.models.noise_regularization:NoiseRegularizationModel",
            options=NoiseRegularizationOptions,
            model_arguments=("activation", "alpha", "hidden_dim", "serve"),
        ),
        Family(
            name="forward",
            model="nlr_tf.models.forward:ForwardModel",
            options=ForwardOptions,
            model_arguments=("multi_label",),
        ),
        Family(
            name="misra",
            model="nlr_tf.models.misra:MisraModel",
            options=MisraOptions,
            model_arguments=("serve",),
        ),
        Family(
            name="confident_learning",
            model="nlr_tf.models.confident_learning:ConfidentLearningModel",
            model_arguments=("multi_label",),
        ),
        Family(
            name="cleannet",
            model="nlr_tf.models.cleannet.model:CleanNetModel",
            options=CleanNetOptions,
            model_arguments=("multi_label",),
        ),
    )
}


# === Methods ===
@dataclasses.dataclass(frozen=True)
class Method:
    """One method or baseline.

    Args:
        name: str. The `--method` value.
        family: str. A key of `FAMILIES`.
        mix_ratio: str. Default noisy:clean examples per batch.
        init: str. "required", "optional" or "none": starting from a `noisy`
            model's checkpoint.
        restore: tuple of str. Parts copied from that checkpoint.
        train_backbone: bool or None. Default; None follows the papers'
            schemes: frozen for multi-label data, trained for single-label.
        description: str. The row it stands for.
        model_args: tuple of (name, value) pairs. Fixed constructor
            arguments of the family's model for this method.
    """

    name: str
    family: str
    mix_ratio: str
    init: str
    restore: tuple[str, ...]
    train_backbone: Optional[bool]
    description: str
    model_args: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family; choose one of {', '.join(FAMILIES)}. Received: family={self.family}")

    @property
    def uses_clean(self) -> bool:
        return not self.mix_ratio.endswith(":0")

    @property
    def uses_noisy(self) -> bool:
        return not self.mix_ratio.startswith("0:")

    def model_class(self):
        """The family's model class (imports it, and so TensorFlow)."""
        return FAMILIES[self.family].model_class()


METHODS = {
    m.name: m
    for m in (
        Method(
            name="noisy",
            family="classifier",
            mix_ratio="1:0",
            init="none",
            restore=(),
            train_backbone=True,
            description="backbone + sigmoid layer on all noisy labels (the starting point of the fine-tuning rows)",
        ),
        Method(
            name="clean",
            family="classifier",
            mix_ratio="0:1",
            init="none",
            restore=(),
            train_backbone=True,
            description="backbone + sigmoid layer on clean labels only (the upper bound with --clean_split=clean_all)",
        ),
        Method(
            name="ft_whole",
            family="classifier",
            mix_ratio="0:1",
            init="required",
            restore=("backbone", "classifier"),
            train_backbone=True,
            description="noisy model, whole network fine-tuned on the clean set (Hu: Noisy-FT-W)",
        ),
        Method(
            name="ft_last",
            family="classifier",
            mix_ratio="0:1",
            init="required",
            restore=("backbone", "classifier"),
            train_backbone=False,
            description="noisy model, last layer fine-tuned on the clean set (Veit: fine-tuning with clean labels; "
            "Hu: Noisy-FT-L)",
        ),
        Method(
            name="ft_mixed",
            family="classifier",
            mix_ratio="9:1",
            init="required",
            restore=("backbone", "classifier"),
            train_backbone=False,
            description="noisy model, last layer fine-tuned on clean + noisy, 1:9 (Veit: mixed labels; Hu: Noisy-FT-M)",
        ),
        Method(
            name="label_cleaning",
            family="label_cleaning",
            mix_ratio="9:1",
            init="optional",
            restore=("backbone", "classifier"),
            train_backbone=False,
            description="Veit et al. 2017: label cleaning network + classifier",
        ),
        Method(
            name="noise_regularization",
            family="noise_regularization",
            mix_ratio="9:1",
            init="optional",
            restore=("backbone",),
            train_backbone=None,
            description="Hu et al. 2019: clean net + residual net",
        ),
        Method(
            name="g_only",
            family="noise_regularization",
            mix_ratio="0:1",
            init="optional",
            restore=("backbone",),
            train_backbone=None,
            description="Hu et al. 2019 ablation: g trained alone on the clean set",
            model_args=(("use_noisy", False),),
        ),
        Method(
            name="forward",
            family="forward",
            mix_ratio="1:0",
            init="optional",
            restore=("backbone", "classifier"),
            train_backbone=None,
            description="Patrini et al. 2017: forward loss correction, noisy labels through a transition matrix T "
            "(--transition=clean_pairs: T from the clean set's paired labels, as Hu's Forward row; anchor: Patrini's)",
        ),
        Method(
            name="misra",
            family="misra",
            mix_ratio="1:0",
            init="optional",
            restore=("backbone", "classifier"),
            train_backbone=None,
            description="Misra et al. 2016: visual presence as a latent variable, trained on noisy labels only "
            "(--serve=visual: the visual classifier; relevance: the relevance classifier)",
        ),
        Method(
            name="confident_learning",
            family="confident_learning",
            mix_ratio="9:1",
            init="required",
            restore=("backbone", "classifier"),
            train_backbone=False,
            description="confident learning (cleanlab): k-fold out-of-sample probabilities on the feature cache flag "
            "mislabelled noisy examples; the last layer trains on the others and the clean set (--feature_cache)",
        ),
        Method(
            name="cleannet",
            family="cleannet",
            mix_ratio="1:0",
            init="optional",
            restore=("backbone", "classifier"),
            train_backbone=None,
            description="Lee et al. 2018, CleanNet-wsoft: noisy labels weighted by CleanNet's verification "
            "similarity, learned from the clean set on a noisy model's features (--reference_features or "
            "--feature_cache)",
        ),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def build_model(
    method: Method,
    num_classes: int,
    backbone_name: str,
    backbone_weights: str = "none",
    image_size: int = 0,
    train_backbone: bool = True,
    options: Optional[dict[str, Any]] = None,
):
    """The model for `method` (its weights built), on a new backbone.

    Args:
        method: `Method`.
        num_classes: int. Number of classes d.
        backbone_name, backbone_weights, image_size: the backbone (see
            `nlr_tf.backbones.networks.build_backbone`).
        train_backbone: bool. Whether the backbone's weights train.
        options: dict. Values of the family's `model_arguments` (e.g. a
            `TrainConfig`'s, with the dataset's `multi_label`); those absent
            keep the model's defaults.
    """
    from nlr_tf.backbones.networks import build_backbone

    options = options or {}
    kwargs = {k: options[k] for k in FAMILIES[method.family].model_arguments if k in options}
    backbone = build_backbone(backbone_name, backbone_weights, image_size, trainable=train_backbone)
    return method.model_class()(backbone, num_classes, **kwargs, **dict(method.model_args), name=method.name)
