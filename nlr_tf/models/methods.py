"""The methods and baselines: which model, which data mix, which parts train.

Every row of the papers' tables is a `Method`: the model family, the
default noisy:clean mix of a batch, whether it starts from a trained `noisy`
model (`--init_checkpoint`), which layers it copies from there, and which
parts it trains by default.
"""

import dataclasses
from typing import Optional

FAMILIES = ("classifier", "label_cleaning", "noise_regularization")
# The activations of noise regularization's clean and residual nets (Hu Table 2).
ACTIVATIONS = ("sigmoid", "tanh", "relu")


@dataclasses.dataclass(frozen=True)
class Method:
    """One method or baseline.

    Args:
        name: str. The `--method` value.
        family: str. "classifier", "label_cleaning" or "noise_regularization".
        mix_ratio: str. Default noisy:clean examples per batch.
        init: str. "required", "optional" or "none": starting from a `noisy`
            model's checkpoint.
        restore: tuple of str. Parts copied from that checkpoint.
        train_backbone: bool or None. Default; None follows the papers'
            schemes: frozen for multi-label data, trained for single-label.
        description: str. The row it stands for.
    """

    name: str
    family: str
    mix_ratio: str
    init: str
    restore: tuple[str, ...]
    train_backbone: Optional[bool]
    description: str

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family; choose one of {', '.join(FAMILIES)}. Received: family={self.family}")

    @property
    def uses_clean(self) -> bool:
        return not self.mix_ratio.endswith(":0")

    @property
    def uses_noisy(self) -> bool:
        return not self.mix_ratio.startswith("0:")


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
    activation: str = "sigmoid",
    alpha: float = 0.2,
    hidden_dim: int = 512,
):
    """Builds (and builds the weights of) the model for `method`.

    The model classes are imported here, not at the top: the method table
    above is read by flag definitions, which must not wait for TensorFlow.
    """
    from nlr_tf.models.backbones import build_backbone
    from nlr_tf.models.classifier_model import SigmoidClassifier
    from nlr_tf.models.label_cleaning_model import LabelCleaningModel
    from nlr_tf.models.noise_regularization_model import NoiseRegularizationModel

    backbone = build_backbone(backbone_name, backbone_weights, image_size, trainable=train_backbone)
    if method.family == "classifier":
        model = SigmoidClassifier(backbone, num_classes, name=method.name)
    elif method.family == "label_cleaning":
        model = LabelCleaningModel(backbone, num_classes, name=method.name)
    elif method.family == "noise_regularization":
        model = NoiseRegularizationModel(
            backbone,
            num_classes,
            hidden_dim=hidden_dim,
            activation=activation,
            alpha=alpha,
            use_noisy=method.uses_noisy,
            name=method.name,
        )
    else:
        raise ValueError(f"no model for family {method.family!r}")
    model.build()
    return model
