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

The rows are in `rows.py`, each stage's rules and the budgets in
`budgets.py`; this module lays them out as the plan's runs (`make_plan`).
"""

import dataclasses
from typing import Optional

from nlr_tf.data.subsets import nested_split_name
from nlr_tf.reproduce.budgets import Budget
from nlr_tf.reproduce.rows import (
    CLAIM_ROWS,
    GT,
    MULTI_LABEL_BASELINE_EXTRAS,
    MULTI_LABEL_BASELINES,
    MULTI_LABEL_EXTRAS,
    MULTI_LABEL_REFERENCES,
    MULTI_LABEL_ROWS,
    NOISY,
    PREMISE_ROWS,
    SHARED_KEYS,
    SHORT,
    SINGLE_LABEL_BASELINE_EXTRAS,
    SINGLE_LABEL_BASELINES,
    SINGLE_LABEL_EXTRAS,
    SINGLE_LABEL_ROWS,
    SOURCE,
    Row,
)

SOURCE_SEED = 0  # one source model for every seed, as one set of ImageNet weights


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
            # A user's dataset: from random weights, or from --backbone_weights (set by the run's config).
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


def user_rows(variant: str) -> tuple[Row, ...]:
    """Every row nlr-compare can train on a user's dataset of `variant` (the noisy model and GT first)."""
    if variant == "multi_label":
        rows = MULTI_LABEL_ROWS + MULTI_LABEL_REFERENCES + MULTI_LABEL_BASELINES + MULTI_LABEL_BASELINE_EXTRAS
    else:
        rows = SINGLE_LABEL_ROWS + SINGLE_LABEL_BASELINES
    return (NOISY, GT, *rows)


def _user_cells(budget: Budget, variant: str) -> list[tuple[Optional[float], Row]]:
    """A user's dataset: the noisy model, GT where every training image is verified, and the chosen rows at
    every clean-label budget (with the rows they start from)."""
    rows = {r.key: r for r in user_rows(variant)}
    wanted = set(budget.user.rows or rows) | {NOISY.key}
    for key in list(wanted):  # a row's starting point trains too
        while rows[key].starts_from:
            key = rows[key].starts_from
            wanted.add(key)
    if not budget.user.has_gt:
        wanted.discard(GT.key)
    chosen = [r for r in rows.values() if r.key in wanted]
    cells: list[tuple[Optional[float], Row]] = [(None, r) for r in chosen if r.shared]
    for fraction in budget.fractions:
        cells += [(fraction, r) for r in chosen if not r.shared]
    return cells


def _cells(budget: Budget, variant: str, seed: int) -> list[tuple[Optional[float], Row]]:
    if budget.user is not None:
        return _user_cells(budget, variant)
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
    if budget.user is not None:
        return tuple(sorted(budget.user.clean_subsets))
    if variant == "multi_label":
        return tuple(sorted(set(budget.fractions) | {budget.main_fraction}))
    return tuple(sorted(set(budget.sl_fractions) | {budget.main_fraction}))
