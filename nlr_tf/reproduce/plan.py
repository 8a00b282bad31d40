"""What `nlr-reproduce` trains: the rows of the papers' tables on digits_mosaic, under one protocol.

The schemes follow the papers' training details (SPEC §1.4):

- multi-label (Hu Table 2, Veit Table 2, Hu Table 5's mAP/APall columns):
  the `noisy` backbone is trained on every noisy label; each method then
  trains only its heads on that frozen backbone, through a feature cache
  built once per seed. `ft_whole` fine-tunes the whole network on the clean
  set; `gt` (Hu's "Backbone (GT)") trains from scratch on every training
  image's verified labels and is the upper bound. Two reference rows fit
  scikit-learn's logistic regression, one per class, on the cached features
  (clean set alone; noisy labels alone): the same model class as `ft_last`,
  solved to convergence.
- single-label (Hu Table 4, Hu Table 5's top-1 column): every method trains
  the whole network once, from the same starting point as the clean-only
  model (Hu: ImageNet for Clothing1M; here: scratch). The two-step runs that
  start from the noisy model are extra, labelled rows.

The protocol (the same rules for every row of a stage):

- a stage is how a row trains: `scratch` (the whole network from random
  init), `whole` (the whole network from the noisy model) or `heads` (heads
  on the frozen backbone's feature cache). Each stage has one maximum step
  count, one evaluation interval on `val`, one patience (evaluations without
  a better validation metric before stopping) and one learning-rate grid;
- every run reports the test metrics of its best-`val` weights
  (`--restore_best`);
- where a stage's grid has several rates, each row's rate is chosen on
  `val`, on the grid seeds; the other seeds reuse the first grid seed's
  choice for that row, variant and fraction.

The clean sets of every fraction are nested and live in one dataset per
variant (`clean_01` ... `clean_20`); `noisy`, `val`, `test` and `clean_all`
do not depend on the fraction, so `noisy` and `gt` are trained once per seed.
"""

import dataclasses
from typing import Any, Optional

from nlr_tf.layers import ACTIVATIONS
from tfrecords_tools.digits_mosaic import nested_split_name

VARIANTS = ("multi_label", "single_label")
SHORT = {"multi_label": "ml", "single_label": "sl", "source": "src"}
STAGES = ("source", "pretext", "scratch", "whole", "heads", "reference")
# `scratch`: every network starts from random weights. `transfer`: as the papers start from ImageNet, networks
# start from a backbone trained on the `glyphs` source task, whose classifier also compiles the multi-label noise.
BENCHMARKS = ("scratch", "transfer")
SOURCE_SEED = 0  # one source model for every seed, as one set of ImageNet weights


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


@dataclasses.dataclass(frozen=True)
class Stage:
    """How every row of one stage trains.

    Args:
        max_steps: int. The most steps a run may take.
        eval_steps: int. Steps between evaluations on `val`.
        patience: int. Evaluations without a better validation metric
            before a run stops.
        batch_size: int. Global batch (a multiple of 10, for 9:1 batches).
        learning_rates: tuple of float. The grid; one value is a fixed choice.
    """

    max_steps: int
    eval_steps: int
    patience: int
    batch_size: int
    learning_rates: tuple[float, ...]

    def scaled(self, scale: float) -> "Stage":
        steps = max(2, int(round(self.max_steps * scale)))
        return dataclasses.replace(self, max_steps=steps, eval_steps=max(1, min(self.eval_steps, steps // 2)))


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much `nlr-reproduce` trains, and on what.

    Args:
        seeds: tuple of int. Training seeds.
        grid_seeds: tuple of int. Seeds whose runs search the learning-rate
            grids; the other seeds reuse the first grid seed's choices.
        scratch, whole, heads: `Stage`. See the module docstring.
        reference_c: tuple of float. The logistic-regression rows' grid of
            inverse L2 strengths (scikit-learn's C), chosen on `val` like the
            heads' learning rates.
        cleaning_pretrain_steps: int. Veit's pretraining of the cleaning net
            on the clean set alone, before (and outside) the joint budget.
        cleannet_steps: int. CleanNet's training (on cached features)
            before a CleanNet-wsoft row's classifier trains.
        fractions: tuple of float. Multi-label clean fractions.
        sl_fractions: tuple of float. Single-label clean fractions; the
            first `sl_regime_seeds` seeds run them, every seed runs
            `main_fraction`.
        sl_regime_seeds: int. See `sl_fractions`.
        main_fraction: float. The fraction of the single-label table, the
            ablations' table and the extra rows.
        extras: bool. Whether to train the extra rows (not in the papers' tables).
        baselines: bool. Whether to train the rows from other works (Misra,
            Forward, CleanNet, confident learning): on multi-label data at
            every fraction, on single-label data at `main_fraction`.
        premise: bool. Whether to run the premise investigation
            (`PREMISE_ROWS`), after every other run.
        networks: tuple of (benchmark, backbone, side). Each benchmark's
            backbone and the side its images are resized to (every variant,
            and the transfer benchmark's source task). At 16 px a single
            digit keeps the detail of its 8x8 scan and a mosaic's digits are
            6-7 px; the network trains about twice as fast as at 32 px, which
            is what lets every row of the scratch benchmark train to a
            plateau here. The transfer benchmark's side was chosen by the
            premise check on val (docs/premise.md): at 16 px a linear head on
            the noisy features closed 56 % of the noisy -> GT gap at 20 %
            clean, at 32 px (mosaic digits at 12-14 px) 79 %.
        dataset_sizes: (train, val, test) or None for the benchmark's defaults.
        benchmarks: tuple of str. Which of `BENCHMARKS` to train.
        variants: tuple of str. The variants trained unless the command
            line says otherwise.
        source_sizes: (train, val, test). The glyphs source task's images.
        annotator_top_k: int. The source classifier's predictions kept per
            mosaic when it compiles the transfer benchmark's noisy labels.
        claim_seeds: tuple of int. Further seeds that train only the noisy
            model and the rows the claims compare (`CLAIM_ROWS`), at
            `claim_fractions`: the claims' t-tests there have
            len(seeds) + len(claim_seeds) seeds.
        claim_fractions: tuple of float. See `claim_seeds`.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    grid_seeds: tuple[int, ...] = (0,)
    # Evaluations come often enough that a row on a small clean set (120 images at 1 %: three steps per pass)
    # is caught before it overfits; on cached features they cost little. The heads' grid: at 1 % clean, half the
    # head rows chose 1e-3 from a grid starting there, and 3e-2 was never chosen, so the grid starts at 3e-4.
    scratch: Stage = Stage(max_steps=4000, eval_steps=100, patience=6, batch_size=60, learning_rates=(1e-3,))
    # The source task: 40,000 glyph images, about 16 passes at most.
    source: Stage = Stage(max_steps=10000, eval_steps=500, patience=4, batch_size=60, learning_rates=(1e-3,))
    # Rotation prediction: 1,000 steps of 60 images at four angles (20 passes over 12,000 images).
    pretext: Stage = Stage(max_steps=1000, eval_steps=0, patience=0, batch_size=60, learning_rates=(1e-3,))
    # Caps high enough that early stopping, not the cap, ends the rows the claims compare: at 5,000 heads steps g
    # alone (10 %) had its best evaluation at the cap in 3 of 3 seeds, and at 2,000 whole-network steps Noisy-FT-W
    # (20 %) in 2 of 3. A row that levels off stops after `patience` evaluations, so a higher cap costs only the
    # rows still improving.
    whole: Stage = Stage(max_steps=4000, eval_steps=50, patience=6, batch_size=40, learning_rates=(1e-4,))
    heads: Stage = Stage(
        max_steps=10000, eval_steps=50, patience=8, batch_size=40, learning_rates=(3e-4, 1e-3, 3e-3, 1e-2)
    )
    reference_c: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    cleaning_pretrain_steps: int = 1000
    cleannet_steps: int = 4000
    fractions: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10, 0.20)
    sl_fractions: tuple[float, ...] = (0.02, 0.05, 0.10)
    sl_regime_seeds: int = 1
    main_fraction: float = 0.10
    extras: bool = True
    baselines: bool = True
    premise: bool = True
    networks: tuple = (("scratch", "small_cnn", 16), ("transfer", "small_cnn", 32))
    dataset_sizes: Optional[tuple[int, int, int]] = None
    benchmarks: tuple[str, ...] = BENCHMARKS
    variants: tuple[str, ...] = VARIANTS
    claim_seeds: tuple[int, ...] = (3, 4)
    claim_fractions: tuple[float, ...] = (0.05, 0.10)
    source_sizes: tuple[int, int, int] = (40000, 2000, 4000)
    annotator_top_k: int = 4

    def network(self, benchmark: str) -> tuple[str, int]:
        """A benchmark's backbone and image side."""
        backbone, side = {b: (n, s) for b, n, s in self.networks}[benchmark]
        return backbone, side

    def stage(self, name: str) -> Stage:
        return getattr(self, name)

    def scaled(self, scale: float) -> "Budget":
        """Every step count times `scale` (a smoke test)."""
        return dataclasses.replace(
            self,
            source=self.source.scaled(scale),
            pretext=self.pretext.scaled(scale),
            scratch=self.scratch.scaled(scale),
            whole=self.whole.scaled(scale),
            heads=self.heads.scaled(scale),
            cleaning_pretrain_steps=max(1, int(round(self.cleaning_pretrain_steps * scale))),
            cleannet_steps=max(1, int(round(self.cleannet_steps * scale))),
        )


FULL = Budget()
# One seed, fewer images and fractions (not fewer steps per image): the same protocol, a smaller problem.
QUICK = Budget(
    seeds=(0,),
    grid_seeds=(0,),
    scratch=Stage(max_steps=1000, eval_steps=100, patience=3, batch_size=60, learning_rates=(1e-3,)),
    whole=Stage(max_steps=600, eval_steps=50, patience=3, batch_size=40, learning_rates=(1e-4,)),
    heads=Stage(max_steps=3000, eval_steps=50, patience=6, batch_size=40, learning_rates=(1e-3, 1e-2)),
    cleaning_pretrain_steps=500,
    fractions=(0.10,),
    sl_fractions=(0.10,),
    main_fraction=0.10,
    extras=False,
    # The rows from other works are left to the full run: the quick run shows both benchmarks' tables of the
    # papers' own rows in about a quarter of an hour.
    baselines=False,
    premise=False,
    dataset_sizes=(4000, 1000, 1000),
    source=Stage(max_steps=3000, eval_steps=500, patience=2, batch_size=60, learning_rates=(1e-3,)),
    source_sizes=(20000, 1000, 2000),
    claim_seeds=(),
    # Multi-label: Hu Table 2 (and Veit Table 2, Hu Table 5's mAP) on both benchmarks in a quarter of an hour.
    variants=("multi_label",),
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training (or reference) run of the plan.

    Args:
        variant: str. "multi_label" or "single_label" ("source" for the
            transfer benchmark's source run).
        seed: int. Training seed.
        fraction: float or None. Clean fraction; None for shared rows.
        row: `Row`.
        learning_rate: float or None. The grid value; None for reference
            rows, and for a non-grid seed's run before its rate is chosen.
        benchmark: str. One of `BENCHMARKS`.
    """

    variant: str
    seed: int
    fraction: Optional[float]
    row: Row
    learning_rate: Optional[float] = None
    benchmark: str = "scratch"

    @property
    def clean_split(self) -> str:
        return dict(self.row.settings).get("clean_split") or (
            "clean" if self.fraction is None else nested_split_name(self.fraction)
        )

    @property
    def cell(self) -> str:
        """The run's table cell: variant/seed/fraction/row."""
        where = "shared" if self.fraction is None else fraction_name(self.fraction)
        return f"{self.benchmark}/{SHORT[self.variant]}/seed{self.seed}/{where}/{self.row.key}"

    @property
    def name(self) -> str:
        return self.cell if self.learning_rate is None else f"{self.cell}/lr{self.learning_rate:g}"

    @property
    def init(self) -> Optional[str]:
        """The cell of the run this one starts from.

        The same seed's noisy model, unless the row says otherwise; a row
        trained from the start (`scratch` stage) starts from random weights
        on the scratch benchmark and from the source backbone on the
        transfer benchmark.
        """
        if self.row.stage == "source":
            return None
        source = self.row.starts_from or ("" if self.row.stage in ("pretext", "scratch") else NOISY.key)
        if not source:
            return source_cell() if self.benchmark == "transfer" else None
        where = "shared" if source in SHARED_KEYS or self.fraction is None else fraction_name(self.fraction)
        return f"{self.benchmark}/{SHORT[self.variant]}/seed{self.seed}/{where}/{source}"

    @property
    def noisy_cell(self) -> str:
        """The cell of the seed's noisy model (whose feature cache the head rows and CleanNet read)."""
        return f"{self.benchmark}/{SHORT[self.variant]}/seed{self.seed}/shared/{NOISY.key}"


def source_run(budget: "Budget") -> Run:
    """The transfer benchmark's source run (one, for every seed)."""
    return Run("source", SOURCE_SEED, None, SOURCE, budget.source.learning_rates[0], "transfer")


def source_cell() -> str:
    return f"transfer/{SHORT['source']}/seed{SOURCE_SEED}/shared/{SOURCE.key}"


def fraction_name(fraction: float) -> str:
    return f"clean{int(round(fraction * 100)):02d}"


def _claim_cells(budget: Budget, variant: str) -> list[tuple[Optional[float], Row]]:
    """A claim seed's cells: the noisy model, and the rows the claims compare at `claim_fractions`."""
    rows = {r.key: r for r in (*MULTI_LABEL_ROWS, *MULTI_LABEL_REFERENCES, *MULTI_LABEL_BASELINES)}
    fractions = budget.fractions
    if variant == "single_label":
        rows = {r.key: r for r in (*SINGLE_LABEL_ROWS, *SINGLE_LABEL_BASELINES)}
        fractions = (budget.main_fraction,)
    if not budget.baselines:
        rows = {k: r for k, r in rows.items() if r not in (*MULTI_LABEL_BASELINES, *SINGLE_LABEL_BASELINES)}
    keys = CLAIM_ROWS[variant]
    cells: list[tuple[Optional[float], Row]] = [(None, NOISY)]
    cells += [(None, rows[k]) for k in keys if k in rows and rows[k].shared]
    for fraction in fractions:
        if fraction in budget.claim_fractions:
            cells += [(fraction, rows[k]) for k in keys if k in rows and not rows[k].shared]
    return cells


def _cells(budget: Budget, variant: str, seed: int) -> list[tuple[Optional[float], Row]]:
    if seed in budget.claim_seeds:
        return _claim_cells(budget, variant)
    cells: list[tuple[Optional[float], Row]] = [(None, NOISY), (None, GT)]
    if variant == "multi_label":
        per_fraction = MULTI_LABEL_ROWS + MULTI_LABEL_REFERENCES
        baselines = MULTI_LABEL_BASELINES if budget.baselines else ()
        cells += [(None, r) for r in MULTI_LABEL_REFERENCES + baselines if r.shared]
        for fraction in budget.fractions:
            cells += [(fraction, r) for r in per_fraction + baselines if not r.shared]
            if fraction == budget.main_fraction and budget.extras:
                cells += [
                    (fraction, r) for r in MULTI_LABEL_EXTRAS + (MULTI_LABEL_BASELINE_EXTRAS if baselines else ())
                ]
    else:
        regime = seed in budget.seeds[: budget.sl_regime_seeds]
        for fraction in budget.sl_fractions:
            if fraction == budget.main_fraction or regime:
                cells += [(fraction, r) for r in SINGLE_LABEL_ROWS]
            if fraction == budget.main_fraction:
                cells += [(fraction, r) for r in SINGLE_LABEL_BASELINES if budget.baselines]
            if fraction == budget.main_fraction and budget.extras:
                cells += [(fraction, r) for r in SINGLE_LABEL_EXTRAS]
                cells += [(fraction, r) for r in SINGLE_LABEL_BASELINE_EXTRAS if budget.baselines]
    return cells


def make_plan(budget: Budget, variants=None) -> list[Run]:
    """Every run, in an order where each run's noisy model, and the grid seeds' choices, come first.

    A stage with one learning rate gives every seed one run at that rate; a
    grid gives the grid seeds one run per rate, and the other seeds one run
    whose rate (None here) the runner takes from the first grid seed's choice.
    """
    variants = budget.variants if variants is None else variants
    seeds = [s for s in budget.seeds if s in budget.grid_seeds] + [
        s for s in budget.seeds if s not in budget.grid_seeds
    ]
    seeds += [s for s in budget.claim_seeds if s not in seeds]
    runs = []
    for benchmark in budget.benchmarks:
        if benchmark == "transfer":
            runs.append(source_run(budget))
        cells = [
            (variant, seed, cell) for variant in variants for seed in seeds for cell in _cells(budget, variant, seed)
        ]
        # The investigation comes last, so the runs before it keep their place (and seed) in the plan.
        if budget.premise and "multi_label" in variants and benchmark == "scratch":
            cells += [
                ("multi_label", seed, (None if row.shared else budget.main_fraction, row))
                for seed in seeds
                if seed not in budget.claim_seeds
                for row in PREMISE_ROWS
            ]
        for variant, seed, (fraction, row) in cells:
            if row.stage == "reference":
                runs.append(Run(variant, seed, fraction, row, None, benchmark))
                continue
            grid = budget.stage(row.stage).learning_rates
            if len(grid) == 1 or seed in budget.grid_seeds:
                runs += [Run(variant, seed, fraction, row, lr, benchmark) for lr in grid]
            else:
                runs.append(Run(variant, seed, fraction, row, None, benchmark))
    return runs


def dataset_fractions(budget: Budget, variant: str) -> tuple[float, ...]:
    """The clean fractions a variant's dataset holds a clean split for."""
    if variant == "multi_label":
        return tuple(sorted(set(budget.fractions) | {budget.main_fraction}))
    return tuple(sorted(set(budget.sl_fractions) | {budget.main_fraction}))
