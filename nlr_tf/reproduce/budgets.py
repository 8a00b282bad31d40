"""How much `nlr-reproduce` trains: each stage's rules (`Stage`) and the budgets (`Budget`: `FULL`, `QUICK`)."""

import dataclasses
from typing import Optional

from nlr_tf.reproduce.rows import BENCHMARKS, VARIANTS


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
class UserDataset:
    """A user's dataset compared by nlr-compare (the plan's `USER_DATA` benchmark).

    Args:
        path: str. The converted dataset (nlr-make-tfrecords' output).
        variant: str. "multi_label" or "single_label", read from its dataset.json.
        clean_subsets: tuple of float. The clean-label budgets: nested shares of its clean split.
        subset_seed: int. The seed of the budgets (and of val/test set aside from the clean split).
        val_from_clean, test_from_clean: float. Shares of the clean split set aside as val / test (0: its own).
        backbone_weights: str. Where every network trained from the start begins ("": random weights;
            "imagenet" or a weights file, as `nlr-train --backbone_weights`).
        has_gt: bool. Whether every training image is verified (a `clean_all` split): the GT row trains.
        rows: tuple of str. The rows to train (empty: every row of the variant).
        strategy: str. The `tf.distribute` strategy every run trains under (`nlr-train --strategy`).
        deterministic: bool. Every run under `nlr-train --deterministic` (input order and seeds reproducible).
    """

    path: str
    variant: str
    clean_subsets: tuple[float, ...]
    subset_seed: int = 0
    val_from_clean: float = 0.0
    test_from_clean: float = 0.0
    backbone_weights: str = ""
    has_gt: bool = False
    rows: tuple[str, ...] = ()
    strategy: str = "default"
    deterministic: bool = True

    def arguments(self) -> dict:
        """What its budgets' dataset is built from (recorded in that dataset, and in the plan's fingerprint)."""
        return {
            "source": "clean_budgets",
            "dataset": self.path,
            "clean_subsets": list(self.clean_subsets),
            "subset_seed": self.subset_seed,
            "val_from_clean": self.val_from_clean,
            "test_from_clean": self.test_from_clean,
        }


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much `nlr-reproduce` trains, and on what.

    Args:
        seeds: tuple of int. Training seeds.
        grid_seeds: tuple of int. Seeds whose runs search the learning-rate
            grids; the other seeds reuse the first grid seed's choices.
        scratch, whole, heads: `Stage`. See `plan.py`'s module docstring.
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
        user: `UserDataset` or None. nlr-compare's dataset (benchmarks is
            then (`USER_DATA`,), networks names its backbone and side).
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
    user: Optional[UserDataset] = None

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


# === A user's dataset (nlr-compare) ===
# Each stage's cap is a number of passes over the data its rows train on: the passes the full budget gives on
# digits_mosaic (REFERENCE_RECORDS: 12,000 noisy images, 1,200 clean at the main fraction), within bounds, so a
# dataset ten times larger trains ten times as many steps, and a tiny one still trains.
STAGE_DATA = {"scratch": "noisy", "whole": "clean", "heads": "noisy"}
REFERENCE_RECORDS = {"noisy": 12000, "clean": 1200}
MIN_STEPS, MAX_STEPS = 500, 200_000


def passes(budget: "Budget", stage: str) -> float:
    """Passes over its data the stage's cap gives on digits_mosaic."""
    s = budget.stage(stage)
    return s.max_steps * s.batch_size / REFERENCE_RECORDS[STAGE_DATA[stage]]


def scaled_to_data(budget: "Budget", records: dict[str, int]) -> tuple["Budget", list[str]]:
    """The budget with each stage's cap scaled to a dataset's `records` ({"noisy": N, "clean": M}), and one line
    per stage saying what it became (printed by nlr-compare and written to its results)."""
    changes, lines = {}, []
    for stage in ("scratch", "whole", "heads"):
        s, data = budget.stage(stage), STAGE_DATA[stage]
        wanted = passes(budget, stage) * records[data] / s.batch_size
        steps = int(min(MAX_STEPS, max(MIN_STEPS, round(wanted))))
        bound = " (at its lower bound)" if steps == MIN_STEPS else " (at its upper bound)" if steps == MAX_STEPS else ""
        changes[stage] = dataclasses.replace(s, max_steps=steps, eval_steps=min(s.eval_steps, max(1, steps // 20)))
        lines.append(
            f"{stage}: at most {steps:,} steps of {s.batch_size} ({steps * s.batch_size / records[data]:.1f} passes "
            f"over the {records[data]:,} {data} images; {passes(budget, stage):.1f} on digits_mosaic){bound}"
        )
    scale = changes["heads"].max_steps / budget.heads.max_steps
    changes["cleaning_pretrain_steps"] = max(1, int(round(budget.cleaning_pretrain_steps * scale)))
    changes["cleannet_steps"] = max(1, int(round(budget.cleannet_steps * scale)))
    return dataclasses.replace(budget, **changes), lines


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
