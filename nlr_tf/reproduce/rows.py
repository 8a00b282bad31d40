"""The rows of the papers' tables (`Row`): each a method with its settings, and the stage it trains in.

With them, the variants and benchmarks they train on, the premise
investigation's rows and the rows the claims compare. The schemes and the
protocol the rows train under are described in `plan.py`.
"""

import dataclasses
from typing import Any

from nlr_tf.layers import ACTIVATIONS

VARIANTS = ("multi_label", "single_label")
SHORT = {"multi_label": "ml", "single_label": "sl", "source": "src"}
STAGES = ("source", "pretext", "scratch", "whole", "heads", "reference")
# `scratch`: every network starts from random weights. `transfer`: as the papers start from ImageNet, networks
# start from a backbone trained on the `glyphs` source task, whose classifier also compiles the multi-label noise.
BENCHMARKS = ("scratch", "transfer")
# nlr-compare: the plan's benchmark dimension holds a user's dataset under this name.
USER_DATA = "data"


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the tables: a method with its settings.

    Args:
        key: str. Row id, also the run folder name.
        label: str. The row's name in the papers' tables.
        method: str. `--method` (for `reference` rows, which labels the
            logistic regression fits: "clean" or "noisy").
        stage: str. One of `STAGES`.
        settings: tuple of (field, value). Further `TrainConfig` fields.
        lr_fields: tuple of (field, factor). The `TrainConfig` learning
            rates set from the stage's grid value (times the factor).
        shared: bool. Trained once per seed, for every clean fraction.
        starts_from: str. The key of the row whose run this one starts
            from (a shared row's, or a row of the same fraction's); "" for
            the default (none for `scratch` rows, the noisy model for the
            others).
    """

    key: str
    label: str
    method: str
    stage: str
    settings: tuple = ()
    lr_fields: tuple = (("learning_rate", 1.0),)
    shared: bool = False
    starts_from: str = ""

    def config(self) -> dict[str, Any]:
        return dict(self.settings)


def _row(
    key, label, method, stage, lr_fields=(("learning_rate", 1.0),), shared=False, starts_from="", **settings
) -> Row:
    return Row(key, label, method, stage, tuple(sorted(settings.items())), lr_fields, shared, starts_from)


# Veit's cleaning net and classifier share the grid's rate: Veit's 0.015 (RMSProp) collapses the cleaning
# net under Adam (see flags/digits_ml_lc_joint.cfg), and Hu re-tuned Veit's rates on COCO.
_CLEANING_LR = (("learning_rate", 1.0), ("cleaning_learning_rate", 1.0), ("cleaning_joint_learning_rate", 1.0))
# A whole network from the noisy model with new heads: heads at ten times the backbone's rate.
_NEW_HEADS_LR = (("learning_rate", 10.0), ("backbone_learning_rate", 1.0))

# The transfer benchmark's analog of ImageNet: a classifier of printed characters (`glyphs`), trained from random
# weights on its exact labels; its backbone starts every network of the benchmark.
SOURCE = _row("source", "Source classifier (glyphs)", "noisy", "source", shared=True)
NOISY = _row("noisy", "Backbone (Noisy)", "noisy", "scratch", shared=True)
GT = _row("gt", "Backbone (GT)", "clean", "scratch", shared=True, clean_split="clean_all")

NR_ACTIVATIONS = ACTIVATIONS
MULTI_LABEL_ROWS = (
    _row("ft_whole", "Backbone (Noisy-FT-W)", "ft_whole", "whole"),
    _row("ft_last", "Backbone (Noisy-FT-L)", "ft_last", "heads"),
    _row("ft_mixed", "Backbone (Noisy-FT-M)", "ft_mixed", "heads"),
    _row("lc_pretrained", "Veit et al. (WP)", "label_cleaning", "heads", _CLEANING_LR, pretrain=True),
    _row("lc_joint", "Veit et al. (TJ)", "label_cleaning", "heads", _CLEANING_LR),
    *(
        _row(f"nr_{a}", f"Proposed ({a if a != 'relu' else 'ReLU'})", "noise_regularization", "heads", activation=a)
        for a in NR_ACTIVATIONS
    ),
    # Hu Table 5's ablations, run at every fraction for the regime map.
    _row("h_only", "training h alone", "noise_regularization", "heads", activation="sigmoid", alpha=0.0),
    _row("g_only", "training g alone", "g_only", "heads", activation="sigmoid"),
)
# The rows of the papers' tables that other works contributed (Veit Table 2: Misra et al.'s two classifiers;
# Hu Table 4: Forward and CleanNet-wsoft), and confident learning. On multi-label data they train heads like
# every head row; those that read no clean label train once per seed (shared).
MULTI_LABEL_BASELINES = (
    _row("misra_visual", "Misra et al. (visual classifier)", "misra", "heads", shared=True, serve="visual"),
    _row("misra_relevance", "Misra et al. (relevance classifier)", "misra", "heads", shared=True, serve="relevance"),
    _row("forward", "Forward (T from the clean set's paired labels)", "forward", "heads", transition="clean_pairs"),
    _row("forward_anchor", "Forward (anchor T)", "forward", "heads", shared=True, transition="anchor"),
    _row("confident_learning", "Confident learning (cleanlab)", "confident_learning", "heads"),
)
MULTI_LABEL_REFERENCES = (
    _row("logreg_clean", "Logistic regression on the cached features (clean set)", "clean", "reference"),
    _row(
        "logreg_noisy", "Logistic regression on the cached features (noisy labels)", "noisy", "reference", shared=True
    ),
)
# Not in Hu's Table 2 (Hu trains heads on a fixed backbone and notes that training the entire network
# might do better): at the ablation fraction only.
MULTI_LABEL_EXTRAS = (
    _row(
        "nr_sigmoid_whole",
        "Proposed (sigmoid), whole network from the noisy model",
        "noise_regularization",
        "whole",
        _NEW_HEADS_LR,
        activation="sigmoid",
    ),
)
SINGLE_LABEL_ROWS = (
    _row("clean_only", "Backbone (Clean)", "clean", "scratch"),
    _row("ft_whole", "Fine-tune (clean set)", "ft_whole", "whole"),
    _row("nr_sigmoid", "Proposed (sigmoid)", "noise_regularization", "scratch", activation="sigmoid"),
    _row("h_only", "training h alone", "noise_regularization", "scratch", activation="sigmoid", alpha=0.0),
    _row("g_only", "training g alone", "g_only", "scratch", activation="sigmoid"),
)
# CleanNet-wsoft is single-label (Hu Table 4); on multi-label data, an extra row at the main fraction.
MULTI_LABEL_BASELINE_EXTRAS = (_row("cleannet", "CleanNet-wsoft", "cleannet", "heads"),)
# Hu Table 4's rows from other works: each trains the whole network on the noisy set from the clean-only
# model's starting point (Hu: "Noisy set, ImageNet"), then a row fine-tunes it on the clean set.
SINGLE_LABEL_BASELINES = (
    _row("cleannet", "CleanNet-wsoft", "cleannet", "scratch"),
    _row("cleannet_ft", "Fine-tune (clean set) from CleanNet", "ft_whole", "whole", starts_from="cleannet"),
    _row("forward", "Forward", "forward", "scratch", transition="clean_pairs"),
    _row("forward_ft", "Fine-tune (clean set) from Forward", "ft_whole", "whole", starts_from="forward"),
)
# Patrini's own estimate of T needs the noisy model's predictions: it starts from the noisy model.
SINGLE_LABEL_BASELINE_EXTRAS = (_row("forward_anchor", "Forward (anchor T)", "forward", "whole", transition="anchor"),)
# The earlier two-step scheme (whole network from the noisy model), kept as labelled extra rows.
SINGLE_LABEL_EXTRAS = tuple(
    _row(f"{key}_from_noisy", f"{label}, from the noisy model", method, "whole", _NEW_HEADS_LR, **settings)
    for key, label, method, settings in (
        ("nr_sigmoid", "Proposed (sigmoid)", "noise_regularization", {"activation": "sigmoid"}),
        ("h_only", "training h alone", "noise_regularization", {"activation": "sigmoid", "alpha": 0.0}),
        ("g_only", "training g alone", "g_only", {"activation": "sigmoid"}),
    )
)

# The investigation of the papers' premise of a strong starting backbone (multi-label, the main fraction):
# the backbone first learns to predict the rotation of the training images (no labels, never val or test),
# then the noisy backbone and the heads train from it exactly as their rows above do.
ROTATION = _row("rotation", "Rotation prediction (training images, no labels)", "rotation", "pretext", shared=True)
PREMISE_ROWS = (
    ROTATION,
    dataclasses.replace(NOISY, key="rot_noisy", label=f"{NOISY.label}, rotation-pretrained", starts_from="rotation"),
    *(
        dataclasses.replace(r, key=f"rot_{r.key}", label=f"{r.label}, rotation-pretrained", starts_from="rot_noisy")
        for r in MULTI_LABEL_ROWS + MULTI_LABEL_REFERENCES
        if r.key in ("ft_whole", "ft_last", *(f"nr_{a}" for a in NR_ACTIVATIONS), "h_only", "g_only")
        or r.stage == "reference"
    ),
)
# Each premise row's counterpart from the randomly initialized backbone.
PREMISE_PAIRS = tuple((r.key, r.key[len("rot_") :]) for r in PREMISE_ROWS if r.key.startswith("rot_"))
# The rows the papers' claims compare (`claims.CLAIMS`): the claim seeds train them, and the noisy model they start
# from, at the claim fractions only (a paired t-test over five seeds where the claims are read, three elsewhere).
CLAIM_ROWS = {
    "multi_label": (
        "ft_whole",
        "ft_last",
        "ft_mixed",
        "lc_pretrained",
        "lc_joint",
        "nr_sigmoid",
        "h_only",
        "g_only",
        "misra_visual",
        "misra_relevance",
        "logreg_clean",
    ),
    "single_label": (
        "clean_only",
        "ft_whole",
        "nr_sigmoid",
        "h_only",
        "g_only",
        "cleannet",
        "cleannet_ft",
        "forward",
        "forward_ft",
    ),
}
# The rows trained once per seed, for every fraction.
SHARED_KEYS = frozenset(
    r.key for r in (NOISY, GT, *MULTI_LABEL_REFERENCES, *MULTI_LABEL_BASELINES, *PREMISE_ROWS) if r.shared
)
