"""What `nlr-reproduce` trains: the rows of the papers' tables on digits_mosaic.

The schemes follow the papers' training details (SPEC §1.4):

- multi-label (Hu Table 2, Veit Table 2, Hu Table 5's mAP/APall columns):
  the `noisy` backbone is trained on every noisy label; each method then
  trains only its heads on that frozen backbone, through a feature cache
  built once per clean fraction. `ft_whole` fine-tunes the whole network on
  the clean set; `gt` (Hu's "Backbone (GT)") trains from scratch on every
  training image's verified labels and is the upper bound.
- single-label (Hu Table 4, Hu Table 5's top-1 column): the whole network
  is trained jointly, starting from the noisy model; `clean_only` trains from
  scratch on the clean set alone (Hu's "ResNet50 (Clean)").

The clean sets of the three fractions are nested, and the noisy, val, test
and `clean_all` splits do not depend on the fraction, so each variant has one
dataset holding every fraction's clean split (`clean_05`, `clean_10`,
`clean_20`); `noisy` and `gt` are trained once per seed and shared by every
fraction, and the multi-label heads of a seed share one feature cache.
"""

import dataclasses
from typing import Any, Optional

from tfrecords_tools.digits_mosaic import nested_split_name

FRACTIONS = (0.05, 0.10, 0.20)
VARIANTS = ("multi_label", "single_label")
SHORT = {"multi_label": "ml", "single_label": "sl"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the tables: a method with its settings.

    Args:
        key: str. Row id, also the run folder name.
        label: str. The row's name in the papers' tables.
        method: str. `--method`.
        stage: str. "scratch" (from random init), "heads" (heads on the
            frozen noisy backbone's feature cache) or "whole" (whole network,
            from the noisy model).
        steps: str. Which `Budget` field sets its step count.
        settings: dict. Further `TrainConfig` fields.
    """

    key: str
    label: str
    method: str
    stage: str
    steps: str
    settings: tuple = ()

    def config(self) -> dict[str, Any]:
        return dict(self.settings)


def _row(key, label, method, stage, steps, **settings) -> Row:
    return Row(key, label, method, stage, steps, tuple(sorted(settings.items())))


_HEAD = dict(learning_rate=1e-3, batch_size=40)
# Whole network from the noisy model: new heads at 1e-3, the backbone at ft_whole's 1e-4
# (see flags/digits_sl_nr_sigmoid.cfg).
_WHOLE = dict(_HEAD, backbone_learning_rate=1e-4)
# Veit's 0.015 (RMSProp) collapses the cleaning net under Adam; see flags/digits_ml_label_cleaning_joint.cfg.
_CLEANING = dict(_HEAD, cleaning_learning_rate=1e-3, cleaning_joint_learning_rate=1e-3)

# Shared rows: trained once per seed and variant.
NOISY = _row("noisy", "Backbone (Noisy)", "noisy", "scratch", "backbone_steps", learning_rate=1e-3, batch_size=64)
GT = _row(
    "gt",
    "Backbone (GT)",
    "clean",
    "scratch",
    "backbone_steps",
    learning_rate=1e-3,
    batch_size=64,
    clean_split="clean_all",
)

MULTI_LABEL_ROWS = (
    _row("ft_whole", "Backbone (Noisy-FT-W)", "ft_whole", "whole", "finetune_steps", learning_rate=1e-4, batch_size=40),
    _row("ft_last", "Backbone (Noisy-FT-L)", "ft_last", "heads", "head_steps", **_HEAD),
    _row("ft_mixed", "Backbone (Noisy-FT-M)", "ft_mixed", "heads", "head_steps", **_HEAD),
    _row("lc_pretrained", "Veit et al. (WP)", "label_cleaning", "heads", "head_steps", pretrain=True, **_CLEANING),
    _row("lc_joint", "Veit et al. (TJ)", "label_cleaning", "heads", "head_steps", **_CLEANING),
    _row(
        "nr_sigmoid",
        "Proposed (sigmoid)",
        "noise_regularization",
        "heads",
        "head_steps",
        activation="sigmoid",
        alpha=0.2,
        **_HEAD,
    ),
    _row(
        "nr_tanh",
        "Proposed (tanh)",
        "noise_regularization",
        "heads",
        "head_steps",
        activation="tanh",
        alpha=0.2,
        **_HEAD,
    ),
    _row(
        "nr_relu",
        "Proposed (ReLU)",
        "noise_regularization",
        "heads",
        "head_steps",
        activation="relu",
        alpha=0.2,
        **_HEAD,
    ),
    # Not in Hu's Table 2: Hu trains the heads on a fixed backbone and notes that training the entire
    # network may do better; this row does, with the single-label rows' settings.
    _row(
        "nr_sigmoid_whole",
        "Proposed (sigmoid), whole network",
        "noise_regularization",
        "whole",
        "whole_steps",
        activation="sigmoid",
        alpha=0.2,
        **_WHOLE,
    ),
)
# Hu Table 5's ablations, at the ablation fraction only.
MULTI_LABEL_ABLATIONS = (
    _row(
        "h_only",
        "training h alone",
        "noise_regularization",
        "heads",
        "head_steps",
        activation="sigmoid",
        alpha=0.0,
        **_HEAD,
    ),
    _row("g_only", "training g alone", "g_only", "heads", "head_steps", activation="sigmoid", **_HEAD),
)
SINGLE_LABEL_ROWS = (
    _row("clean_only", "Backbone (Clean)", "clean", "scratch", "clean_only_steps", learning_rate=1e-3, batch_size=40),
    _row("ft_whole", "Fine-tune (clean set)", "ft_whole", "whole", "finetune_steps", learning_rate=1e-4, batch_size=40),
    _row(
        "nr_sigmoid",
        "Proposed (sigmoid)",
        "noise_regularization",
        "whole",
        "whole_steps",
        activation="sigmoid",
        alpha=0.2,
        **_WHOLE,
    ),
    _row(
        "h_only",
        "training h alone",
        "noise_regularization",
        "whole",
        "whole_steps",
        activation="sigmoid",
        alpha=0.0,
        **_WHOLE,
    ),
    _row(
        "g_only",
        "training g alone",
        "g_only",
        "whole",
        "whole_steps",
        activation="sigmoid",
        **_WHOLE,
    ),
)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much `nlr-reproduce` trains.

    Args:
        seeds: tuple of int. Training seeds; each configuration runs once per seed.
        backbone_steps: int. `noisy` and `gt` backbones (batch 64).
        head_steps: int. Heads on the feature cache (batch 40).
        finetune_steps: int. `ft_whole` (batch 40).
        whole_steps: int. Single-label methods from the noisy model (batch 40).
        clean_only_steps: int. The single-label clean-only model from scratch.
        curve_steps: int. Steps between the validation evaluations drawn as
            training curves (Hu Fig. 4); 0 for none.
        fractions: tuple of float. Clean fractions (multi-label).
        single_label_fraction: float. Clean fraction of the single-label runs.
        ablation_fraction: float. Clean fraction of the multi-label ablations.
        dataset_sizes: (train, val, test) or None for the benchmark's defaults.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    backbone_steps: int = 1000
    head_steps: int = 1000
    finetune_steps: int = 300
    whole_steps: int = 600
    clean_only_steps: int = 1000
    curve_steps: int = 100
    fractions: tuple[float, ...] = FRACTIONS
    single_label_fraction: float = 0.10
    ablation_fraction: float = 0.10
    dataset_sizes: Optional[tuple[int, int, int]] = None

    def scaled(self, scale: float) -> "Budget":
        """Every step count times `scale` (at least 2 steps)."""
        fields = ("backbone_steps", "head_steps", "finetune_steps", "whole_steps", "clean_only_steps", "curve_steps")
        return dataclasses.replace(self, **{f: max(2, int(round(getattr(self, f) * scale))) for f in fields})


FULL = Budget()
QUICK = Budget(
    seeds=(0,),
    backbone_steps=400,
    head_steps=300,
    finetune_steps=100,
    whole_steps=200,
    clean_only_steps=300,
    curve_steps=50,
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the plan.

    Args:
        variant: str. "multi_label" or "single_label".
        seed: int. Training seed.
        fraction: float or None. Clean fraction; None for runs shared by every fraction.
        row: `Row`.
        steps: int. Training steps.
        curve_steps: int. Steps between validation evaluations during
            training (a training curve); 0 for none.
    """

    variant: str
    seed: int
    fraction: Optional[float]
    row: Row
    steps: int
    curve_steps: int = 0

    @property
    def clean_split(self) -> str:
        return dict(self.row.settings).get("clean_split") or (
            "clean" if self.fraction is None else nested_split_name(self.fraction)
        )

    @property
    def name(self) -> str:
        where = "shared" if self.fraction is None else fraction_name(self.fraction)
        return f"{SHORT[self.variant]}/seed{self.seed}/{where}/{self.row.key}"

    @property
    def init(self) -> Optional[str]:
        """Name of the run this one starts from (the same seed's noisy model)."""
        if self.row.stage == "scratch":
            return None
        return f"{SHORT[self.variant]}/seed{self.seed}/shared/noisy"


def fraction_name(fraction: float) -> str:
    return f"clean{int(round(fraction * 100)):02d}"


def make_plan(budget: Budget, variants=VARIANTS) -> list[Run]:
    """Every run, in an order where each run's noisy model is trained first."""
    runs = []
    for variant in variants:
        for seed in budget.seeds:
            for row in (NOISY, GT):
                runs.append(Run(variant, seed, None, row, getattr(budget, row.steps)))
            if variant == "multi_label":
                for fraction in budget.fractions:
                    rows = MULTI_LABEL_ROWS
                    if fraction == budget.ablation_fraction:
                        rows += MULTI_LABEL_ABLATIONS
                    for row in rows:
                        # Hu Fig. 4: each activation's training curve at the smallest clean fraction.
                        curve = (
                            budget.curve_steps if row.key.startswith("nr_") and fraction == min(budget.fractions) else 0
                        )
                        runs.append(Run(variant, seed, fraction, row, getattr(budget, row.steps), curve))
            else:
                fraction = budget.single_label_fraction
                for row in SINGLE_LABEL_ROWS:
                    runs.append(Run(variant, seed, fraction, row, getattr(budget, row.steps)))
    return runs


def dataset_fractions(budget: Budget, variant: str) -> tuple[float, ...]:
    """The clean fractions a variant's dataset holds a clean split for."""
    if variant == "multi_label":
        return tuple(sorted(set(budget.fractions) | {budget.ablation_fraction}))
    return (budget.single_label_fraction,)
