"""nlr-compare --dry_run: the runs a comparison would train, and their time estimated from a short rehearsal.

The rehearsal is the plan itself, made small: one seed, the largest
clean-label budget, the first rate of each grid, and every row trained for
`REHEARSAL_STEPS` steps with two evaluations on val, by the same runner, on
the same data and strategy, in OUTPUT_DIR/dry_run/. Each rehearsal run
records what a step and an evaluation took once traced (`train_result.json`'s
`step_seconds`, `eval_seconds`) and its whole time; what is left is the run's
fixed cost (building the model, tracing, the family's preparation, the test
evaluation, saving). The feature cache it extracts is timed on its own, as is
every logistic-regression reference fit.

A planned run is then estimated as its row's fixed cost plus its steps and
evaluations at the rehearsal's rates, between two bounds: every run stopping
as early as patience allows (its best evaluation the first), and every run
training to its step cap. The real time falls between them, nearer the lower
bound when most rows level off early.
"""

import dataclasses
import os
import time
from typing import Any, Optional

import tensorflow as tf

from nlr_tf.data import files
from nlr_tf.reproduce.budgets import Budget, Stage
from nlr_tf.reproduce.datasets import needs_feature_cache
from nlr_tf.reproduce.fingerprint import plan_fingerprint
from nlr_tf.reproduce.plan import make_plan
from nlr_tf.reproduce.run_configs import train_config
from nlr_tf.training import model_dir as run_files
from nlr_tf.training import preemption

REHEARSAL_STEPS = 40  # two loops of 20 steps (the first traces) and two evaluations (the first traces)
ESTIMATE_FILE = "dry_run.json"  # OUTPUT_DIR/dry_run.json: what the results compare the real time with


def rehearsal_budget(budget: Budget) -> Budget:
    """The plan made small: one seed, the largest budget, one rate per stage, `REHEARSAL_STEPS` steps a row."""

    def short(stage: Stage) -> Stage:
        return dataclasses.replace(
            stage,
            max_steps=REHEARSAL_STEPS,
            eval_steps=REHEARSAL_STEPS // 2,
            patience=0,
            learning_rates=stage.learning_rates[:1],
        )

    largest = max(budget.fractions)
    return dataclasses.replace(
        budget,
        seeds=budget.seeds[:1],
        grid_seeds=budget.seeds[:1],
        fractions=(largest,),
        sl_fractions=(largest,),
        main_fraction=largest,
        scratch=short(budget.scratch),
        whole=short(budget.whole),
        heads=short(budget.heads),
        cleaning_pretrain_steps=min(budget.cleaning_pretrain_steps, REHEARSAL_STEPS),
        cleannet_steps=min(budget.cleannet_steps, REHEARSAL_STEPS),
    )


def _rehearsed(rehearsal_dir: str, records: list[dict[str, Any]], budget: Budget) -> dict[str, dict[str, float]]:
    """Per row: the rehearsal's seconds per step and per evaluation, its fixed cost and its feature extraction."""
    timings = {}
    for record in records:
        metrics = files.read_json(run_files.metrics_path(os.path.join(rehearsal_dir, record["model_dir"]), "test"))
        features = metrics.get("feature_seconds", 0.0)
        seconds = metrics["seconds"] - features
        step = metrics.get("step_seconds") or 0.0
        evaluation = metrics.get("eval_seconds") or 0.0
        if record["max_steps"] is not None:  # a trained row: what is neither a step nor an evaluation is fixed
            extra = budget.cleannet_steps if record["method"] == "cleannet" else 0
            evaluations = len(metrics.get("eval_history", []))
            seconds -= step * (record["max_steps"] + extra) + evaluation * evaluations
        timings[record["row"]] = {
            "fixed": max(0.0, seconds),
            "step": step,
            "evaluation": evaluation,
            "features": features,
        }
    return timings


def _share_data(source: str, target: str) -> None:
    """The comparison's data folder inside the rehearsal's: a symbolic link on a local disk; elsewhere (no links),
    a copy of its files, made once."""
    if not files.is_url(target):
        if not os.path.lexists(target):
            os.symlink(source, target)
        return
    for folder, _, names in tf.io.gfile.walk(source):
        for name in names:
            copy = os.path.join(target, os.path.relpath(os.path.join(folder, name), source))
            if not files.exists(copy):
                files.makedirs(os.path.dirname(copy))
                files.copy(os.path.join(folder, name), copy)


def estimate(
    output_dir: str, budget: Budget, variant: str, preemption_notice: Optional[preemption.RunNotice] = None
) -> dict[str, Any]:
    """Rehearses the plan of `budget` (see the module docstring) and estimates each of its runs' time.

    Args:
        preemption_notice: `preemption.RunNotice` or None. Passed to `run_plan`: a SIGTERM checkpoints the
            rehearsal run training, or stops at once outside training. Defaults to None.

    Returns:
        {"runs", "feature_caches", "rows": [per-row counts and bounds], "lower", "upper" (seconds),
         "rehearsal_seconds", "fingerprint" (of the plan estimated)}.
    """
    from nlr_tf.reproduce.runner import run_plan

    rehearsal_dir = os.path.join(output_dir, "dry_run")
    files.makedirs(rehearsal_dir)
    _share_data(os.path.join(output_dir, "data"), os.path.join(rehearsal_dir, "data"))
    small = rehearsal_budget(budget)
    start = time.perf_counter()
    records, _, _ = run_plan(rehearsal_dir, small, [variant], preemption_notice=preemption_notice)
    rehearsal_seconds = time.perf_counter() - start
    timings = _rehearsed(rehearsal_dir, records, small)

    runs = make_plan(budget, [variant])
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        t = timings[run.row.key]
        row = rows.setdefault(
            run.row.key, {"row": run.row.key, "label": run.row.label, "runs": 0, "lower": 0.0, "upper": 0.0}
        )
        row["runs"] += 1
        if run.row.stage == "reference":
            row["lower"] += t["fixed"]
            row["upper"] += t["fixed"]
            continue
        stage = budget.stage(run.row.stage)
        rate = run.learning_rate or stage.learning_rates[0]
        config = train_config(dataclasses.replace(run, learning_rate=rate), output_dir, budget)
        before = config.cleaning_pretrain_steps + (config.cleannet_steps if run.row.method == "cleannet" else 0)
        cap = stage.max_steps
        earliest = min(cap, (stage.patience + 1) * stage.eval_steps) if stage.patience else cap
        for bound, steps in (("lower", earliest), ("upper", cap)):
            evaluations = steps // stage.eval_steps if stage.eval_steps else 0
            row[bound] += t["fixed"] + t["step"] * (before + steps) + t["evaluation"] * evaluations
        row["cap"] = cap
        row["step_seconds"] = t["step"]
    caches = len({run.seed for run in runs if needs_feature_cache(run)})  # one per seed, shared by its rows
    extraction = sum(t["features"] for t in timings.values())
    lower = sum(r["lower"] for r in rows.values()) + caches * extraction
    upper = sum(r["upper"] for r in rows.values()) + caches * extraction
    return {
        "runs": len(runs),
        "feature_caches": caches,
        "feature_seconds": extraction,
        "rows": list(rows.values()),
        "lower": lower,
        "upper": upper,
        "rehearsal_seconds": rehearsal_seconds,
        "fingerprint": plan_fingerprint(budget, [variant]),
    }


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(1, minutes)} min"


def describe(result: dict[str, Any]) -> list[str]:
    """The estimate as lines: one per row, then the total."""
    lines = [f"{'row':<56} {'runs':>5} {'step cap':>9} {'s/step':>7} {'time (early stop - cap)':>24}"]
    for r in result["rows"]:
        cap = f"{r['cap']:,}" if "cap" in r else "-"
        step = f"{r['step_seconds']:.3f}" if "step_seconds" in r else "-"
        span = f"{duration(r['lower'])} - {duration(r['upper'])}"
        lines.append(f"{r['label'][:56]:<56} {r['runs']:>5} {cap:>9} {step:>7} {span:>24}")
    lines.append(
        f"{result['runs']} runs and {result['feature_caches']} feature cache(s) "
        f"({duration(result['feature_seconds'])} each): between {duration(result['lower'])} (every run stopping "
        f"as early as patience allows) and {duration(result['upper'])} (every run to its step cap); "
        f"the rehearsal took {duration(result['rehearsal_seconds'])}"
    )
    return lines


def read_estimate(output_dir: str, budget: Budget, variant: str) -> Optional[dict[str, Any]]:
    """The dry run's estimate of this plan, if one was made (None for another plan's)."""
    path = os.path.join(output_dir, ESTIMATE_FILE)
    result = files.read_json_if_exists(path)
    if result is None:
        return None
    return result if result.get("fingerprint") == plan_fingerprint(budget, [variant]) else None


def write_estimate(output_dir: str, result: dict[str, Any]) -> None:
    run_files.write_json(os.path.join(output_dir, ESTIMATE_FILE), result)
