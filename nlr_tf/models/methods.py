"""The methods and baselines, and the model families they train: a registry.

Every row of the papers' tables is a `Method`: its model family, the
default noisy:clean mix of a batch, whether it starts from a trained `noisy`
model (`--init_checkpoint`), which layers it copies from there, and which
parts it trains by default. A `Family` names its model class (a
`NoisyLabelModel` subclass, imported only when a model is built) and the
`TrainConfig` fields passed to it as arguments. The model class itself
declares the rest (its parts, optional phases such as label cleaning's
pretraining, extra outputs such as c-hat), and the trainer, evaluator and
cleaning code ask it. Adding a method: one model file, one `Family` (if it
is a new family) and one `Method` entry here, and their tests.

This module imports no TensorFlow: flag definitions read it.
"""

import dataclasses
import importlib
from typing import Any, Optional

# The activations of noise regularization's clean and residual nets (Hu Table 2).
ACTIVATIONS = ("sigmoid", "tanh", "relu")
# How forward correction estimates its noise transition matrix T.
TRANSITIONS = ("clean_pairs", "anchor")
# Mixed precision: "none" (float32) or a Keras mixed dtype policy (see `nlr_tf.models.precision`).
PRECISIONS = ("none", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: its model class and the configuration it takes.

    Args:
        name: str. The family's name (recorded in a run's config.json).
        model: str. "module:Class" of its `NoisyLabelModel` subclass.
        options: tuple of str. `TrainConfig` fields (or `DATASET_OPTIONS`)
            passed to the model's constructor as keyword arguments of the
            same name.
    """

    name: str
    model: str
    options: tuple[str, ...] = ()

    def model_class(self):
        module, name = self.model.split(":")
        return getattr(importlib.import_module(module), name)


FAMILIES = {
    f.name: f
    for f in (
        Family("classifier", "nlr_tf.models.classifier_model:SigmoidClassifier"),
        Family("label_cleaning", "nlr_tf.models.label_cleaning_model:LabelCleaningModel"),
        Family(
            "noise_regularization",
            "nlr_tf.models.noise_regularization_model:NoiseRegularizationModel",
            ("activation", "alpha", "hidden_dim", "serve"),
        ),
        Family("forward", "nlr_tf.models.forward_model:ForwardModel", ("multi_label",)),
        Family("misra", "nlr_tf.models.misra_model:MisraModel", ("serve",)),
        Family("confident_learning", "nlr_tf.models.confident_learning_model:ConfidentLearningModel", ("multi_label",)),
        Family("cleannet", "nlr_tf.models.cleannet_model:CleanNetModel", ("multi_label",)),
    )
}
# Options a family takes from the dataset, not from the configuration.
DATASET_OPTIONS = ("multi_label",)


@dataclasses.dataclass(frozen=True)
class Phase:
    """A training phase a family runs before its main one (e.g. label cleaning's pretraining).

    The model's `NAME_step` method takes its steps.

    Args:
        name: str. The phase's name; the model's step method is `{name}_step`.
        steps_option: str. The `TrainConfig` field that holds its number of
            steps (0: skipped). They count within `train_steps`.
        mix_ratio: str. The noisy:clean mix of its batches.
        loss_names: tuple of str. The keys of the dict its step returns.
    """

    name: str
    steps_option: str
    mix_ratio: str
    loss_names: tuple[str, ...]


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
            "noisy",
            "classifier",
            "1:0",
            "none",
            (),
            True,
            "backbone + sigmoid layer on all noisy labels (the starting point of the fine-tuning rows)",
        ),
        Method(
            "clean",
            "classifier",
            "0:1",
            "none",
            (),
            True,
            "backbone + sigmoid layer on clean labels only (the upper bound with --clean_split=clean_all)",
        ),
        Method(
            "ft_whole",
            "classifier",
            "0:1",
            "required",
            ("backbone", "classifier"),
            True,
            "noisy model, whole network fine-tuned on the clean set (Hu: Noisy-FT-W)",
        ),
        Method(
            "ft_last",
            "classifier",
            "0:1",
            "required",
            ("backbone", "classifier"),
            False,
            "noisy model, last layer fine-tuned on the clean set (Veit: fine-tuning with clean labels; Hu: Noisy-FT-L)",
        ),
        Method(
            "ft_mixed",
            "classifier",
            "9:1",
            "required",
            ("backbone", "classifier"),
            False,
            "noisy model, last layer fine-tuned on clean + noisy, 1:9 (Veit: mixed labels; Hu: Noisy-FT-M)",
        ),
        Method(
            "label_cleaning",
            "label_cleaning",
            "9:1",
            "optional",
            ("backbone", "classifier"),
            False,
            "Veit et al. 2017: label cleaning network + classifier",
        ),
        Method(
            "noise_regularization",
            "noise_regularization",
            "9:1",
            "optional",
            ("backbone",),
            None,
            "Hu et al. 2019: clean net + residual net",
        ),
        Method(
            "g_only",
            "noise_regularization",
            "0:1",
            "optional",
            ("backbone",),
            None,
            "Hu et al. 2019 ablation: g trained alone on the clean set",
            model_args=(("use_noisy", False),),
        ),
        Method(
            "forward",
            "forward",
            "1:0",
            "optional",
            ("backbone", "classifier"),
            None,
            "Patrini et al. 2017: forward loss correction, noisy labels through a transition matrix T "
            "(--transition=clean_pairs: T from the clean set's paired labels, as Hu's Forward row; anchor: Patrini's)",
        ),
        Method(
            "misra",
            "misra",
            "1:0",
            "optional",
            ("backbone", "classifier"),
            None,
            "Misra et al. 2016: visual presence as a latent variable, trained on noisy labels only "
            "(--serve=visual: the visual classifier; relevance: the relevance classifier)",
        ),
        Method(
            "confident_learning",
            "confident_learning",
            "9:1",
            "required",
            ("backbone", "classifier"),
            False,
            "confident learning (cleanlab): k-fold out-of-sample probabilities on the feature cache flag mislabelled "
            "noisy examples; the last layer trains on the others and the clean set (--feature_cache)",
        ),
        Method(
            "cleannet",
            "cleannet",
            "1:0",
            "optional",
            ("backbone", "classifier"),
            None,
            "Lee et al. 2018, CleanNet-wsoft: noisy labels weighted by CleanNet's verification similarity, learned "
            "from the clean set on a noisy model's features (--reference_features or --feature_cache)",
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
            `nlr_tf.models.backbones.build_backbone`).
        train_backbone: bool. Whether the backbone's weights train.
        options: dict. Values of the family's `options` (e.g. a
            `TrainConfig`'s); those absent keep the model's defaults.
    """
    from nlr_tf.models.backbones import build_backbone

    options = options or {}
    kwargs = {k: options[k] for k in FAMILIES[method.family].options if k in options}
    backbone = build_backbone(backbone_name, backbone_weights, image_size, trainable=train_backbone)
    return method.model_class()(backbone, num_classes, **kwargs, **dict(method.model_args), name=method.name)


def phase_schedule(phases: tuple[Phase, ...], config) -> list[tuple[Optional[Phase], int]]:
    """The phases of a run in order, each with the step it ends at; the main phase (None) ends at `train_steps`.

    Args:
        phases: the model class's `phases`.
        config: a `TrainConfig` (read: each phase's `steps_option`, `train_steps`).
    """
    schedule, end = [], 0
    for phase in phases:
        steps = getattr(config, phase.steps_option)
        if steps:
            end += steps
            schedule.append((phase, end))
    return schedule + [(None, config.train_steps)]


def main_phase_start(phases: tuple[Phase, ...], config) -> int:
    """The step the main phase starts at: the steps of every phase before it."""
    return sum(getattr(config, phase.steps_option) for phase in phases)
