r"""nlr-reproduce: the papers' tables on the built-in digits_mosaic benchmark.

Example:
  nlr-reproduce --output_dir=out/reproduce_quick --quick   # one seed, one fraction, about 9 minutes on 2 cores
  nlr-reproduce --output_dir=out/reproduce --ledger=LEDGER  # the full run: 1,078 runs, about 8 CPU-hours

The full run trains both benchmarks (scratch and transfer) with three seeds,
five for the rows the claims compare at 5 and 10 % clean. It builds
digits_mosaic (multi- and single-label, with clean splits of 1, 2, 5, 10
and 20 % of the training images) if absent, then trains and evaluates
every row of Hu et al. 2019 Tables 2, 4 and 5 and Veit et al. 2017 Table 2
under one protocol (early stopping on val, a learning-rate grid per stage),
and writes results.json, results.md (the tables with a gap-closed column,
the regime map and the papers' claims checked) and plots into --output_dir.
Each run is an ordinary nlr-train model dir under OUTPUT_DIR/runs; started
again, it reuses finished runs and resumes an interrupted one, so the full
run may span several invocations. One job at a time works in an OUTPUT_DIR
(it holds OUTPUT_DIR/job.lock): a second is refused with one line naming
the first.

A SIGTERM (a preemption notice) stops it: the run training checkpoints the
step it reached, anything else (a dataset, a feature cache, a reference row,
the results) stops at once, leaving no results.md or results.json and no
ledger entry of an unfinished chunk; it prints one line naming the run and
exits with status 75 (`preemption.PREEMPTED_STATUS`). The same command
then goes on where it stopped.
"""

import os
import sys
import time

from absl import app, flags

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "out/reproduce", "Folder for data, runs and results.")
_QUICK = flags.DEFINE_bool(
    "quick", False, "One seed, fewer images and fractions, the same protocol (about 9 minutes on 2 CPU cores)."
)
_SEEDS = flags.DEFINE_list("seeds", None, "Training seeds (default: 0 with --quick, else 0,1,2).")
_STEP_SCALE = flags.DEFINE_float("step_scale", 1.0, "Multiplies every step count (a smoke test: 0.02).", lower_bound=0)
_VARIANTS = flags.DEFINE_list(
    "variants",
    None,
    "Which tables: multi_label (Hu 2, 5; Veit 2), single_label (Hu 4, 5). Default: both; with --quick, multi_label.",
)
_NUM_TRAIN = flags.DEFINE_integer("num_train", None, "digits_mosaic training images (default 12000).", lower_bound=100)
_NUM_VAL = flags.DEFINE_integer("num_val", None, "digits_mosaic validation images (default 2000).", lower_bound=20)
_COMPARE_TO = flags.DEFINE_string(
    "compare_to", "", "A results.json (e.g. docs/results.json): print the rank agreement of each table's rows with it."
)
_NUM_TEST = flags.DEFINE_integer("num_test", None, "digits_mosaic test images (default 4000).", lower_bound=20)
_BENCHMARKS = flags.DEFINE_list(
    "benchmarks",
    None,
    "scratch (every network from random weights) and/or transfer (from the glyphs source backbone, noisy labels "
    "compiled by the source classifier). Default: both.",
)
_SOURCE_IMAGES = flags.DEFINE_list(
    "source_images", None, "The glyphs source task's train,val,test images (default 40000,2000,4000; quick 20000,...)."
)
_LEDGER = flags.DEFINE_string(
    "ledger",
    "",
    "A folder small enough to copy to another machine: each finished chunk of runs (a benchmark, variant and seed) "
    "is recorded there, and the chunks it holds are reused, so a reproduction longer than one sitting goes on "
    "elsewhere from the same plan.",
)


@flags.validator("variants", message="--variants takes multi_label and/or single_label")
def _check_variants(values):
    return values is None or bool(values) and all(v in ("multi_label", "single_label") for v in values)


@flags.validator("benchmarks", message="--benchmarks takes scratch and/or transfer")
def _check_benchmarks(values):
    return values is None or (bool(values) and all(v in ("scratch", "transfer") for v in values))


@flags.validator("source_images", message="--source_images takes three positive integers: train,val,test")
def _check_source_images(values):
    return values is None or (len(values) == 3 and all(v.isdigit() and int(v) > 0 for v in values))


@flags.validator("seeds", message="--seeds takes non-negative integers, e.g. 0,1,2")
def _check_seeds(values):
    return values is None or (bool(values) and all(v.isdigit() for v in values))


@flags.validator("compare_to", message="--compare_to must name an existing results.json")
def _check_compare_to(value):
    from nlr_tf.data import files

    return not value or files.isfile(value)


@flags.validator("step_scale", message="--step_scale must be above 0")
def _check_scale(value):
    return value > 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from nlr_tf.cli import faults
    from nlr_tf.data import files

    return faults.run_plan_job("nlr-reproduce", files.absolute(_OUTPUT_DIR.value), _main)


def _main(notice):
    import dataclasses

    from nlr_tf.data import files
    from nlr_tf.data.schema import DatasetError
    from nlr_tf.reproduce.budgets import FULL, QUICK
    from nlr_tf.reproduce.datasets import ReproduceError, build_datasets
    from nlr_tf.reproduce.fingerprint import code_version, plan_fingerprint
    from nlr_tf.reproduce.ledger import LedgerError
    from nlr_tf.reproduce.report import RESULTS_JSON, RESULTS_MD, write_results
    from nlr_tf.reproduce.rows import BENCHMARKS, VARIANTS
    from nlr_tf.reproduce.runner import run_plan
    from nlr_tf.training.checks import ConfigError
    from nlr_tf.training.trainer import TrainingDiverged

    budget = QUICK if _QUICK.value else FULL
    if _SEEDS.value is not None:
        budget = dataclasses.replace(budget, seeds=tuple(int(s) for s in _SEEDS.value))
        missing = [s for s in budget.grid_seeds if s not in budget.seeds]
        if missing:
            # The other seeds reuse the grid seeds' learning-rate choices: without them there is nothing to reuse.
            print(
                f"nlr-reproduce: error: --seeds={','.join(_SEEDS.value)} leaves out seed "
                f"{','.join(map(str, missing))}, whose runs choose the learning rates the other seeds reuse: add it "
                f"(e.g. --seeds={','.join(map(str, [*missing, *budget.seeds]))}); with --ledger its finished chunks "
                "are restored, not trained again",
                file=sys.stderr,
            )
            return 1
    if _STEP_SCALE.value != 1.0:
        budget = budget.scaled(_STEP_SCALE.value)
    if _NUM_TRAIN.value or _NUM_VAL.value or _NUM_TEST.value:
        budget = dataclasses.replace(budget, dataset_sizes=(_NUM_TRAIN.value, _NUM_VAL.value, _NUM_TEST.value))
    if _SOURCE_IMAGES.value is not None:
        budget = dataclasses.replace(budget, source_sizes=tuple(int(v) for v in _SOURCE_IMAGES.value))
    if _BENCHMARKS.value is not None:
        budget = dataclasses.replace(budget, benchmarks=tuple(b for b in BENCHMARKS if b in _BENCHMARKS.value))
    variants = [v for v in VARIANTS if v in (_VARIANTS.value or budget.variants)]
    # Absolute: the runs' recorded settings (and a ledger's) name their paths inside it the same way every time.
    output_dir = files.absolute(_OUTPUT_DIR.value)
    fingerprint = plan_fingerprint(budget, variants)
    command = " ".join(["nlr-reproduce"] + sys.argv[1:])
    reference = None
    if _COMPARE_TO.value:  # read first: it may be this folder's own results.json, rewritten at the end
        reference = files.read_json(_COMPARE_TO.value)
    start = time.perf_counter()
    try:
        build_datasets(output_dir, budget, variants, print)
        for name in (RESULTS_JSON, RESULTS_MD):  # rewritten once every run has finished
            files.remove(os.path.join(output_dir, name))
        records, run_seconds, run_cpu_seconds = run_plan(
            output_dir, budget, variants, ledger_dir=_LEDGER.value, preemption_notice=notice
        )
    except (ReproduceError, ConfigError, DatasetError, TrainingDiverged, LedgerError) as e:
        print(f"nlr-reproduce: error: {e}", file=sys.stderr)
        return 1
    tables = write_results(
        output_dir,
        records,
        budget,
        command,
        time.perf_counter() - start,
        run_seconds,
        reference,
        run_cpu_seconds=run_cpu_seconds,
        fingerprint=fingerprint,
        code_version=code_version(),
    )
    print()
    print(tables)
    minutes = (time.perf_counter() - start) / 60
    print(f"\nwrote {os.path.join(output_dir, RESULTS_MD)} and {RESULTS_JSON} ({minutes:.1f} min)")
    return 0


def run(argv=None):
    """Runs nlr-reproduce on `argv` (None: `sys.argv`); a full disk ends it in one line (`faults.run`)."""
    from nlr_tf.cli import faults

    faults.run("nlr-reproduce", main, argv)


if __name__ == "__main__":
    run()
