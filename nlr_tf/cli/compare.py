r"""nlr-compare: which method, and how many clean labels, on your own dataset.

Example:
  nlr-compare --dataset=data/mine --output_dir=out/compare_mine --clean_subsets=0.1,0.25,0.5,1.0
  nlr-compare --dataset=data/mine --output_dir=out/compare_quick --quick
  nlr-compare --dataset=data/mine --output_dir=out/compare_mine --dry_run

Runs the rows of the papers' tables that apply to a dataset nlr-make-tfrecords
wrote (multi-label: Hu Table 2 and Veit Table 2 with the rows from other
works and the logistic-regression references; single-label: Hu Table 4), on
nested, seeded, class-stratified subsets of its clean split (the
clean-label budgets, as Hu Table 3), under nlr-reproduce's protocol: one
step cap, evaluation interval on val, patience and learning-rate grid per
stage, rates chosen on val, the test metrics of the best-val weights. The
step caps are passes over each row's own data, scaled to the dataset's
size and printed.

Writes OUTPUT_DIR/results.md and results.json (the table per budget, each
row's chosen rate and best step, the recommendation: the leading row per
budget, the rows it is significantly above, the budget beyond which more
clean labels stop paying, and the commands that train the recommended
method on all the data, export it and write its cleaned labels) and
regime_map.png. Started again, it reuses finished runs and resumes an
interrupted one. One job at a time works in an OUTPUT_DIR (it holds
OUTPUT_DIR/job.lock): a second is refused with one line naming the first.

With --dry_run it lists the runs it would train and estimates their time
from a rehearsal: every row trained for a few timed steps (one seed, the
largest budget) in OUTPUT_DIR/dry_run, its feature cache extracted once.
The estimate is a range: every run stopping as early as its patience allows,
every run training to its step cap.

A SIGTERM (a preemption notice) stops it: the run training checkpoints the
step it reached, anything else (a feature cache, a reference row, the
results) stops at once, leaving no results.md or results.json; it prints
one line naming the run and exits with status 75
(`preemption.PREEMPTED_STATUS`). The same command then reuses the finished
runs, resumes the interrupted one and writes the results an uninterrupted
comparison writes.
"""

import dataclasses
import os
import sys
import time

from absl import app, flags

from nlr_tf.backbones.sizes import BACKBONES
from nlr_tf.training.config import STRATEGIES

_DATASET = flags.DEFINE_string("dataset", None, "A dataset folder written by nlr-make-tfrecords.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for the budgets' dataset, the runs and the results.")
_CLEAN_SUBSETS = flags.DEFINE_list(
    "clean_subsets", ["0.1", "0.25", "0.5", "1.0"], "Clean-label budgets: nested shares of the clean split."
)
_SUBSET_SEED = flags.DEFINE_integer("subset_seed", 0, "Seed of the budgets (and of val/test set aside).", lower_bound=0)
_VAL_FROM_CLEAN = flags.DEFINE_float(
    "val_from_clean", 0.0, "Set aside this share of the clean split as val (for a dataset without one).", 0.0, 0.5
)
_TEST_FROM_CLEAN = flags.DEFINE_float(
    "test_from_clean", 0.0, "Set aside this share of the clean split as test (for a dataset without one).", 0.0, 0.5
)
_ROWS = flags.DEFINE_list("rows", None, "The rows to train (default: every row that applies); see results.md.")
_BACKBONE = flags.DEFINE_enum("backbone", "small_cnn", BACKBONES, "Backbone network, as nlr-train.")
_BACKBONE_WEIGHTS = flags.DEFINE_string(
    "backbone_weights", "", "Where every network trained from the start begins: imagenet or a weights file."
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Input side (0: the backbone's default).", lower_bound=0)
_SEEDS = flags.DEFINE_list("seeds", None, "Training seeds (default 0,1,2; with --quick 0).")
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", STRATEGIES, "The tf.distribute strategy every run trains under, as nlr-train."
)
_DETERMINISTIC = flags.DEFINE_bool(
    "deterministic",
    True,
    "Train every run reproducibly (nlr-train --deterministic): the same command gives the same table, and a killed "
    "comparison resumes to it. --nodeterministic trades that for input throughput.",
)
_QUICK = flags.DEFINE_bool("quick", False, "One seed and the quick stage budgets, on all of the data.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print the runs and an estimate of their time from a short timed rehearsal; train nothing else."
)
_STEP_SCALE = flags.DEFINE_float("step_scale", 1.0, "Multiplies every step count (a smoke test: 0.02).")

flags.mark_flags_as_required(["dataset", "output_dir"])


@flags.validator("clean_subsets", message="--clean_subsets takes fractions in (0, 1], e.g. 0.1,0.25,0.5,1.0")
def _check_subsets(values):
    try:
        return bool(values) and all(0 < float(v) <= 1 for v in values)
    except ValueError:
        return False


@flags.validator("seeds", message="--seeds takes non-negative integers, e.g. 0,1,2")
def _check_seeds(values):
    return values is None or (bool(values) and all(v.isdigit() for v in values))


@flags.validator("step_scale", message="--step_scale must be above 0")
def _check_scale(value):
    return value > 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from nlr_tf.cli import faults
    from nlr_tf.data import files

    output_dir = files.absolute(_OUTPUT_DIR.value)
    return faults.run_plan_job("nlr-compare", output_dir, _main, keep_results=_DRY_RUN.value)


def _main(notice):
    from nlr_tf.data import files
    from nlr_tf.data.clean_budgets import CleanBudgetError
    from nlr_tf.data.schema import DatasetError, load_dataset_info
    from nlr_tf.data.subsets import nested_split_name
    from nlr_tf.reproduce import budgets, dry_run
    from nlr_tf.reproduce.compare import write_compare_results
    from nlr_tf.reproduce.datasets import ReproduceError, build_datasets, dataset_dir
    from nlr_tf.reproduce.fingerprint import code_version
    from nlr_tf.reproduce.plan import user_rows
    from nlr_tf.reproduce.report import RESULTS_JSON, RESULTS_MD
    from nlr_tf.reproduce.rows import USER_DATA
    from nlr_tf.reproduce.runner import run_plan
    from nlr_tf.training.checks import ConfigError
    from nlr_tf.training.trainer import TrainingDiverged

    def error(message) -> int:
        print(f"nlr-compare: error: {message}", file=sys.stderr)
        return 1

    try:
        info = load_dataset_info(_DATASET.value)
    except DatasetError as e:
        return error(e)
    variant = "multi_label" if info.multi_label else "single_label"
    if not info.has_split("noisy"):
        return error(f"dataset {info.path!r} has no noisy split (the images with noisy labels)")
    known = [r.key for r in user_rows(variant)]
    unknown = [r for r in (_ROWS.value or []) if r not in known]
    if unknown:
        return error(f"--rows: {', '.join(unknown)} is no row of a {variant} comparison; the rows: {', '.join(known)}")
    subsets = tuple(sorted({float(v) for v in _CLEAN_SUBSETS.value}))
    seeds = tuple(int(s) for s in _SEEDS.value) if _SEEDS.value else ((0,) if _QUICK.value else (0, 1, 2))
    user = budgets.UserDataset(
        path=info.path,
        variant=variant,
        clean_subsets=subsets,
        subset_seed=_SUBSET_SEED.value,
        val_from_clean=_VAL_FROM_CLEAN.value,
        test_from_clean=_TEST_FROM_CLEAN.value,
        backbone_weights=_BACKBONE_WEIGHTS.value,
        has_gt=info.has_split("clean_all"),
        rows=tuple(_ROWS.value or ()),
        strategy=_STRATEGY.value,
        deterministic=_DETERMINISTIC.value,
    )
    base = budgets.QUICK if _QUICK.value else budgets.FULL
    budget = dataclasses.replace(
        base,
        seeds=seeds,
        grid_seeds=seeds[:1],
        claim_seeds=(),
        fractions=subsets,
        sl_fractions=subsets,
        sl_regime_seeds=len(seeds),
        main_fraction=subsets[-1],
        extras=False,
        baselines=True,
        premise=False,
        benchmarks=(USER_DATA,),
        variants=(variant,),
        networks=((USER_DATA, _BACKBONE.value, _IMAGE_SIZE.value),),
        dataset_sizes=None,
        user=user,
    )
    output_dir = files.absolute(_OUTPUT_DIR.value)
    start = time.perf_counter()
    try:
        build_datasets(output_dir, budget, [variant], print)
        data = load_dataset_info(dataset_dir(output_dir, variant, USER_DATA))
        largest = data.splits[nested_split_name(subsets[-1])]
        records = {"noisy": data.splits["noisy"].num_records, "clean": largest.num_records}
        budget, cap_lines = budgets.scaled_to_data(budget, records)
        if _STEP_SCALE.value != 1.0:
            budget = budget.scaled(_STEP_SCALE.value)
            cap_lines.append(f"every step count then times {_STEP_SCALE.value:g} (--step_scale)")
        for line in cap_lines:
            print(f"step cap: {line}")
        if _DRY_RUN.value:
            print(f"dry run: rehearsing every row for {dry_run.REHEARSAL_STEPS} steps in {output_dir}/dry_run")
            result = dry_run.estimate(output_dir, budget, variant, preemption_notice=notice)
            dry_run.write_estimate(output_dir, result)
            print("\n" + "\n".join(dry_run.describe(result)))
            return 0
        rows, run_seconds, run_cpu_seconds = run_plan(output_dir, budget, [variant], preemption_notice=notice)
    except (CleanBudgetError, ReproduceError, ConfigError, DatasetError, TrainingDiverged) as e:
        return error(e)
    text = write_compare_results(
        output_dir,
        rows,
        budget,
        command=" ".join(["nlr-compare"] + sys.argv[1:]),
        elapsed=time.perf_counter() - start,
        run_seconds=run_seconds,
        run_cpu_seconds=run_cpu_seconds,
        data_report=data.provenance.get("clean_budgets", {}),
        cap_lines=cap_lines,
        code_version=code_version(),
        estimate=dry_run.read_estimate(output_dir, budget, variant),
    )
    print()
    print(text)
    print(f"\nwrote {os.path.join(output_dir, RESULTS_MD)} and {RESULTS_JSON}")
    return 0


def run(argv=None):
    """Runs nlr-compare on `argv` (None: `sys.argv`); a full disk ends it in one line (`faults.run`)."""
    from nlr_tf.cli import faults

    faults.run("nlr-compare", main, argv)


if __name__ == "__main__":
    run()
