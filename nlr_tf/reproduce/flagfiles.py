"""The benchmark's flagfiles, `flags/digits_*.cfg`: one run of `nlr-reproduce` each, to train by hand.

Each flagfile is rendered from the plan (`budgets.FULL`) through the
reproduction's own `run_configs.train_config`, so it carries exactly the
settings `nlr-reproduce` trains that row with: seed 0, the main clean
fraction, the user's `out/...` and `runs/...` paths instead of the
reproduction's, and, where the row's stage searches a learning-rate grid,
the grid's middle value (`nlr-reproduce` chooses the rate on `val`).

After changing the plan or the run configs, regenerate them:

  python -m nlr_tf.reproduce.flagfiles

(`tests/test_flagfiles.py` fails while a flagfile differs from its rendering.)
"""

import dataclasses
import decimal
import os
import sys
from typing import Any, Optional

from nlr_tf.data import files
from nlr_tf.reproduce.budgets import FULL, Budget
from nlr_tf.reproduce.datasets import DATA_SEED
from nlr_tf.reproduce.plan import Run, dataset_fractions
from nlr_tf.reproduce.rows import (
    GT,
    MULTI_LABEL_BASELINE_EXTRAS,
    MULTI_LABEL_BASELINES,
    MULTI_LABEL_EXTRAS,
    MULTI_LABEL_ROWS,
    NOISY,
    SHORT,
    SINGLE_LABEL_BASELINE_EXTRAS,
    SINGLE_LABEL_BASELINES,
    SINGLE_LABEL_EXTRAS,
    SINGLE_LABEL_ROWS,
    VARIANTS,
    Row,
)
from nlr_tf.reproduce.run_configs import train_config
from nlr_tf.training.config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS_DIR = os.path.join(ROOT, "flags")
PREFIX = "digits_"  # every flagfile of flags/ this module owns starts with it
COMMAND = "python -m nlr_tf.reproduce.flagfiles"

ROWS = {
    "multi_label": (
        NOISY,
        GT,
        *MULTI_LABEL_ROWS,
        *MULTI_LABEL_BASELINES,
        *MULTI_LABEL_EXTRAS,
        *MULTI_LABEL_BASELINE_EXTRAS,
    ),
    "single_label": (
        NOISY,
        GT,
        *SINGLE_LABEL_ROWS,
        *SINGLE_LABEL_BASELINES,
        *SINGLE_LABEL_EXTRAS,
        *SINGLE_LABEL_BASELINE_EXTRAS,
    ),
}
# The flags every flagfile states, default or not (with its row's settings and learning rates); the others
# only when they differ from TrainConfig's default.
ALWAYS = ("method", "dataset", "backbone", "optimizer")
# The flags first, in this order (what trains on what, from what); the rest in TrainConfig's order.
FIRST = ("method", "dataset", "clean_split", "init_checkpoint", "train_backbone", "feature_cache")
PATHS = ("model_dir", "dataset", "init_checkpoint", "feature_cache", "reference_features")
_STAGES = {
    "scratch": "the whole network from random initialization",
    "whole": "the whole network, starting from the noisy model",
    "heads": "heads on the noisy model's frozen backbone, through its feature cache",
}


def rows(variant: str) -> tuple[Row, ...]:
    """The rows of a variant that have a flagfile: every `nlr-train` row of the plan (not the reference fits)."""
    return tuple(r for r in ROWS[variant] if r.stage != "reference")


def flagfile_name(variant: str, row: Row) -> str:
    return f"{PREFIX}{SHORT[variant]}_{row.key}.cfg"


def dataset_path(variant: str) -> str:
    return f"out/digits_mosaic_{SHORT[variant]}"


def model_dir(variant: str, row: Row) -> str:
    return f"runs/digits_{SHORT[variant]}_{row.key}"


def grid_rate(budget: Budget, row: Row) -> float:
    """The rate a flagfile carries: its stage's only rate, or the middle of its grid."""
    grid = budget.stage(row.stage).learning_rates
    return grid[len(grid) // 2]


def plan_run(variant: str, row: Row, budget: Budget = FULL) -> Run:
    """The plan's run of a row: the first seed, at the main fraction (shared rows: at none), the flagfile's rate."""
    fraction = None if row.shared else budget.main_fraction
    return Run(variant, budget.seeds[0], fraction, row, grid_rate(budget, row))


def starting_row(variant: str, row: Row) -> Row:
    """The row whose run this one starts from (the noisy model's, unless the row names another)."""
    if not row.starts_from:
        return NOISY
    return next(r for r in ROWS[variant] if r.key == row.starts_from)


def user_paths(variant: str, row: Row) -> dict[str, str]:
    """The flagfile's paths: the dataset and runs of the commands in its header."""
    noisy = model_dir(variant, NOISY)
    return {
        "dataset": dataset_path(variant),
        "model_dir": model_dir(variant, row),
        "init_checkpoint": model_dir(variant, starting_row(variant, row)),
        "feature_cache": f"{noisy}/features",
        "reference_features": f"{noisy}/features",
    }


def flagfile_config(variant: str, row: Row, budget: Budget = FULL) -> TrainConfig:
    """`run_configs.train_config` of the row's run, with the user's paths in place of the reproduction's."""
    config = train_config(plan_run(variant, row, budget), "OUTPUT_DIR", budget, "NOISY_MODEL_DIR")
    for field, path in user_paths(variant, row).items():
        if getattr(config, field):  # the runner's paths that are set (init, cache: only for some rows)
            setattr(config, field, path)
    return config


def format_value(value: Any) -> str:
    """A flag value as absl parses it back to the same value: 1e-3 for 0.001, true/false for bools."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) < 0.1:  # the shortest exact digits, in scientific notation
            digits = decimal.Decimal(repr(value)).normalize()
            sign, mantissa, exponent = digits.as_tuple()
            text = "".join(map(str, mantissa))
            text = text[0] + ("." + text[1:] if len(text) > 1 else "")
            return f"{'-' if sign else ''}{text}e{exponent + len(mantissa) - 1}"
        return repr(value)
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def dataset_command(variant: str, budget: Budget = FULL) -> str:
    """The `nlr-make-tfrecords` command that builds the dataset `datasets.build_datasets` builds."""
    args = [
        "nlr-make-tfrecords",
        "--source=digits_mosaic",
        f"--variant={variant}",
        f"--clean_fraction={budget.main_fraction:g}",
        "--nested_clean_fractions=" + ",".join(f"{f:g}" for f in dataset_fractions(budget, variant)),
    ]
    for name, size in zip(("num_train", "num_val", "num_test"), budget.dataset_sizes or ()):
        if size is not None:
            args.append(f"--{name}={size}")
    if DATA_SEED:
        args.append(f"--seed={DATA_SEED}")
    return " ".join(args + [f"--output_dir={dataset_path(variant)}"])


def _notes(row: Row) -> list[str]:
    """Why a row's learning rates are what they are (where it is not just the grid's)."""
    lr = dict(row.lr_fields)
    if row.method == "label_cleaning":
        return [
            "Learning rates: Veit's 0.015 for the cleaning net was set for RMSProp on Open Images. With Adam it",
            "drives c-hat outside [0, 1] within a few hundred steps, where the clip passes no gradient, and the",
            "cleaning net collapses (every image gets the same labels). Hu et al. re-tuned Veit's rates on COCO with",
            "Adam; here the cleaning net takes the classifier's rate (an earlier measurement on this benchmark:",
            "val mAP 86.5 at 1e-3/1e-3, 84.3 at 1e-3/1e-4, 82.8 at 3e-3/1e-3).",
        ]
    if "backbone_learning_rate" in lr:
        factor = lr["learning_rate"] / lr["backbone_learning_rate"]
        return [
            f"Learning rates: the heads start from random weights and learn at {factor:g} times the rate of the",
            "backbone, already trained on the noisy labels (as Hu's Clothing1M fine-tuning). An earlier single-label",
            "measurement: 1e-3 for both oscillates (val top-1 96.6, 91.1, 96.7, 99.4, 95.8 every 300 steps);",
            "1e-4 for both learns slowly (79.2 % at step 150).",
        ]
    return []


def _stage_text(variant: str, row: Row) -> str:
    if row.stage == "whole" and row.starts_from:
        return f"the whole network, starting from the model of {starting_row(variant, row).label!r}"
    return _STAGES[row.stage]


def render(variant: str, row: Row, budget: Budget = FULL) -> str:
    """The text of one flagfile."""
    if row.stage == "reference":
        raise ValueError(f"{row.key} is a scikit-learn reference fit, not an nlr-train run")
    config = flagfile_config(variant, row, budget)
    stage = budget.stage(row.stage)
    run = plan_run(variant, row, budget)
    name = flagfile_name(variant, row)
    metric = "mAP" if variant == "multi_label" else "top-1"
    where = (
        f"{100 * budget.main_fraction:g} % clean"
        if not row.shared
        else f"trained once for every clean fraction (dataset built at {100 * budget.main_fraction:g} % clean)"
    )
    seeds = ", ".join(map(str, budget.seeds))
    pretrain = config.cleaning_pretrain_steps
    lines = [
        f"# digits_mosaic, {variant}, {where}: {row.label}.",
        f"# nlr-reproduce's row {row.key!r}, stage {row.stage!r}: {_stage_text(variant, row)}.",
        f"# Generated by `{COMMAND}` from nlr-reproduce's plan and runner: do not edit.",
        "#",
        f"# Protocol: up to {stage.max_steps} steps"
        + (f" (after {pretrain} of cleaning-net pretraining)" if pretrain else "")
        + f", evaluated on val every {stage.eval_steps};",
        f"# stops after {stage.patience} evaluations without a better val {metric};"
        " the final model holds the best val weights.",
        f"# Seed {run.seed}: nlr-reproduce trains seeds {seeds} (add --seed=N).",
        "#",
        "# Dataset:",
        f"#   {dataset_command(variant, budget)}",
        "#",
        "# Run" + (f" (after flags/{flagfile_name(variant, starting_row(variant, row))}):" if run.init else ":"),
        f"#   nlr-train --flagfile=flags/{name} --model_dir={config.model_dir}",
    ]
    if config.feature_cache:
        lines.append(f"# (the first heads run writes the noisy model's feature cache, {config.feature_cache})")
    if config.reference_features:
        lines.append(
            f"# (after: nlr-extract-features --model_dir={user_paths(variant, NOISY)['model_dir']} "
            f"--dataset={config.dataset} --output_dir={config.reference_features})"
        )
    notes = _notes(row)
    if notes:
        lines += ["#"] + [f"# {line}" for line in notes]
    lines.append("")
    lines += _flag_lines(config, row, budget)
    return "\n".join(lines) + "\n"


def _flag_lines(config: TrainConfig, row: Row, budget: Budget) -> list[str]:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    values = dataclasses.asdict(config)
    # The row's own settings and learning rates too, default or not (--activation=sigmoid of nr_sigmoid).
    stated = set(ALWAYS) | set(row.config()) | {field for field, _ in row.lr_fields}
    names = [n for n in values if n != "model_dir" and (n in stated or values[n] != defaults.get(n))]
    names.sort(key=lambda n: (FIRST.index(n) if n in FIRST else len(FIRST), list(values).index(n)))
    grid = budget.stage(row.stage).learning_rates
    lr_fields = [field for field, _ in row.lr_fields]
    lines = []
    for n in names:
        if len(grid) > 1 and n == lr_fields[0]:
            lines.append(f"# nlr-reproduce chooses this rate on val from the grid {', '.join(map(format_value, grid))}")
            if len(lr_fields) > 1:
                others = ", ".join(
                    f"{field} {'=' if factor == 1 else f'= {factor:g} x'} this rate"
                    for field, factor in row.lr_fields[1:]
                )
                lines.append(f"# ({others})")
        lines.append(f"--{n}={format_value(values[n])}")
    return lines


def flagfiles(budget: Budget = FULL) -> dict[str, str]:
    """Every digits flagfile: file name -> text."""
    return {flagfile_name(v, r): render(v, r, budget) for v in VARIANTS for r in rows(v)}


def write_flagfiles(flags_dir: str = FLAGS_DIR) -> tuple[list[str], list[str]]:
    """Writes every digits flagfile and removes the digits flagfiles the plan no longer has.

    Returns:
        (names written or changed, names removed).
    """
    texts = flagfiles()
    changed = []
    for name, text in texts.items():
        path = os.path.join(flags_dir, name)
        if files.isfile(path) and files.read_text(path) == text:
            continue
        files.write_text(path, text)
        changed.append(name)
    removed = []
    for path in files.glob(os.path.join(flags_dir, f"{PREFIX}*.cfg")):
        if os.path.basename(path) not in texts:
            files.remove(path)
            removed.append(os.path.basename(path))
    return changed, removed


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        print(f"usage: {COMMAND}  (rewrites {os.path.relpath(FLAGS_DIR)}/{PREFIX}*.cfg)", file=sys.stderr)
        return 2
    changed, removed = write_flagfiles()
    for name in changed:
        print(f"wrote flags/{name}")
    for name in removed:
        print(f"removed flags/{name}")
    print(f"{len(flagfiles())} digits flagfiles, {len(changed)} changed, {len(removed)} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
