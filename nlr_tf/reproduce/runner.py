"""Runs the reproduction plan: datasets, training, evaluation, in one process.

Every run writes an ordinary `nlr-train` model dir under OUTPUT_DIR/runs/
and its test metrics where `nlr-eval` puts them (MODEL_DIR/eval_test/
metrics.json), so any run can be inspected, evaluated or exported with the
other binaries. A run whose metrics already exist with the same settings is
reused: an interrupted reproduction started again continues where it
stopped (a half-trained run resumes from its last checkpoint).

The datasets and feature caches are built by `datasets.py`; each run's
settings come from `run_configs.py`.

Given a `preemption.RunNotice`, a SIGTERM stops the plan: during a run's
training, at the trainer's next step boundary, that step checkpointed;
anywhere else at once (a feature cache or dataset being written is removed,
a run's metrics are written only once it is done). The notice names the
run under way (`RunNotice.run`); the same plan started again reuses the
finished runs and resumes the interrupted one.
"""

import dataclasses
import functools
import os
import sys
import time
from typing import Any, Optional, TextIO

import keras
from absl import logging

from nlr_tf.data import files
from nlr_tf.data.schema import DatasetInfo, load_dataset_info
from nlr_tf.reproduce import ledger
from nlr_tf.reproduce.budgets import Budget
from nlr_tf.reproduce.datasets import (
    build_dataset,
    build_feature_cache,
    dataset_arguments,
    feature_cache_dir,
    features_cell,
    needs_feature_cache,
)
from nlr_tf.reproduce.plan import Run, make_plan
from nlr_tf.reproduce.run_configs import (
    CONFIG_DEFAULTS,
    claim_run_dir,
    planned_settings,
    pretext_config,
    run_dir,
    run_seed,
    train_config,
)
from nlr_tf.training import model_dir as run_files
from nlr_tf.training import preemption, pretext
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.model_dir import load_trained_model
from nlr_tf.training.trainer import train


def train_and_evaluate(config: TrainConfig, preemption_notice: Optional[preemption.RunNotice] = None) -> dict[str, Any]:
    """Trains one run (resuming if interrupted) and returns its test metrics and its best validation result.

    Args:
        config: `TrainConfig`.
        preemption_notice: `preemption.RunNotice` or None. A SIGTERM during training checkpoints the step reached
            and raises `preemption.Preempted`; one in its last steps lets it finish, then raises before the
            evaluation. Defaults to None.
    """
    from nlr_tf.evaluation.evaluator import evaluate

    if preemption_notice is None:
        result = train(config)
    else:
        with preemption_notice.training():
            result = train(config, preemption_notice=preemption_notice)
        preemption_notice.check(result["step"])  # trained and saved; the next invocation evaluates it
    model, run_config = load_trained_model(config.model_dir)
    info: DatasetInfo = load_dataset_info(config.feature_cache or config.dataset)
    metrics = evaluate(
        model,
        info,
        "test",
        backbone=run_config["backbone"],
        image_size=run_config.get("image_size", 0),
        scores_file=run_files.scores_path(config.model_dir, "test"),  # resampled for the test metrics' precision
    )
    metric = "mAP" if info.multi_label else "top1"
    metrics.update(
        val=result[f"best_{metric}"],
        best_step=result["best_step"],
        stopped_early=result["stopped_early"],
        eval_history=result["eval_history"],
        # What a step and an evaluation on val took (nlr-compare --dry_run's estimate reads them).
        step_seconds=result["step_seconds"],
        eval_seconds=result["eval_seconds"],
    )
    keras.backend.clear_session()
    return metrics


def fit_reference(run: Run, output_dir: str, budget: Budget) -> dict[str, Any]:
    """The logistic-regression reference row of a run: fit on the cache's train split, its C chosen on val."""
    from nlr_tf.evaluation.evaluator import write_scores
    from nlr_tf.evaluation.linear_reference import logistic_regression_reference

    cache = load_dataset_info(feature_cache_dir(output_dir, run))
    split = run.clean_split if run.row.method == "clean" else "noisy"
    metric = "mAP" if cache.multi_label else "top1"
    fits = {
        C: logistic_regression_reference(cache, split, run.row.method, ("val", "test"), C=C, keep_scores=True)
        for C in budget.reference_c
    }
    C = max(fits, key=lambda c: (fits[c]["val"][metric], -c))
    test = fits[C]["test"]
    write_scores(run_files.scores_path(run_dir(output_dir, run), "test"), test["entries"])
    return {
        **{k: test[k] for k in ("mAP", "APall", "top1")},
        "val": fits[C]["val"][metric],
        "C": C,
        "grid": [{"C": c, "val": fits[c]["val"][metric]} for c in fits],
        "best_step": None,
        "stopped_early": None,
        "eval_history": [],
    }


def _warnings_only(function):
    """`function` with absl's verbosity at WARNING while it runs (every run's step lines would drown the plan's
    progress lines), and put back after it: the caller's logging stays as it was."""

    @functools.wraps(function)
    def quiet(*args, **kwargs):
        previous = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)
        try:
            return function(*args, **kwargs)
        finally:
            logging.set_verbosity(previous)

    return quiet


@_warnings_only
def run_plan(
    output_dir: str,
    budget: Budget,
    variants,
    *,
    out: TextIO = sys.stdout,
    ledger_dir: str = "",
    preemption_notice: Optional[preemption.RunNotice] = None,
) -> tuple[list[dict[str, Any]], list[Optional[float]], list[Optional[float]]]:
    """Trains and evaluates every run (on the datasets `build_datasets` wrote).

    Args:
        ledger_dir: str. A ledger folder (`nlr_tf.reproduce.ledger`): its
            finished chunks are reused, and each chunk finished here is
            added to it.
        preemption_notice: `preemption.RunNotice` or None. Set to name the
            run under way; a SIGTERM stops the plan with
            `preemption.Preempted` (see the module docstring).

    Returns:
        One record per table cell (variant, seed, fraction, row): the run its
        learning-rate choice selected, with `grid`, every rate's validation
        metric; and every run's own wall and CPU seconds (None for a run
        finished before its times were recorded).
    """

    def log(message: str) -> None:
        print(message, file=out, flush=True)

    runs = make_plan(budget, variants)
    chunk_runs: list[Run] = []  # the runs of the current chunk so far (the ledger records whole chunks)
    cells: dict[str, list[dict[str, Any]]] = {}  # cell -> the records of its runs so far
    pretexts: dict[str, float] = {}  # pretext cell -> its rotation accuracy
    seconds: list[Optional[float]] = []
    cpu_seconds: list[Optional[float]] = []
    start_all = time.perf_counter()

    def selected(cell: str) -> dict[str, Any]:
        """The run of `cell` with the best validation metric (the smallest rate on ties)."""
        return max(cells[cell], key=lambda r: (r["val"], -(r["learning_rate"] or 0.0)))

    def chosen_rate(run: Run) -> float:
        grid_cell = run.cell.replace(f"/seed{run.seed}/", f"/seed{budget.grid_seeds[0]}/", 1)
        return selected(grid_cell)["learning_rate"]

    def resolved(run: Run) -> Run:
        if run.learning_rate is None and run.row.stage != "reference":
            return dataclasses.replace(run, learning_rate=chosen_rate(run))
        return run

    def restore_chunk(first: int) -> None:
        """Restores, from the ledger, the chunk that starts at runs[first] if the plan still has it unchanged."""
        key = ledger.chunk(runs[first])
        end = next((k for k in range(first, len(runs)) if ledger.chunk(runs[k]) != key), len(runs))
        members = [resolved(r) for r in runs[first:end]]
        planned = {r.name: ledger.comparable(planned_settings(r, output_dir, budget)) for r in members}
        dataset = dataset_arguments(budget, runs[first].variant, runs[first].benchmark)
        restored = ledger.restore_chunk(ledger_dir, output_dir, key, planned, dataset, lambda n: run_dir_of(n))
        if restored is None:
            log(f"ledger: {key} was recorded with other settings; training it again")
        elif restored:
            log(f"ledger: {key}: {restored} finished runs restored")

    def run_dir_of(name: str) -> str:
        return os.path.join(output_dir, "runs", name)

    for i, run in enumerate(runs, 1):
        if ledger_dir and (i == 1 or ledger.chunk(runs[i - 2]) != ledger.chunk(run)):
            restore_chunk(i - 1)
        run = resolved(run)
        if preemption_notice is not None:
            preemption_notice.check()  # a SIGTERM a library call swallowed: stop before the next run
            preemption_notice.run = run.name
        where = "" if run.fraction is None else f" {100 * run.fraction:g}% clean"
        rate = "" if run.learning_rate is None else f", lr {run.learning_rate:g}"
        prefix = f"[{i:>3}/{len(runs)}] {run.benchmark} {run.variant} seed {run.seed}{where}: {run.row.label}{rate}"
        model_dir = run_dir(output_dir, run)
        metrics_path = run_files.metrics_path(model_dir, "test")
        start, cpu_start = time.perf_counter(), time.process_time()
        init_dir = selected(run.init)["model_dir_abs"] if run.init else ""
        settings = planned_settings(run, output_dir, budget, init_dir)
        claim_run_dir(model_dir, settings, CONFIG_DEFAULTS if run.row.stage not in ("reference", "pretext") else None)
        if run.row.stage == "pretext":
            config = pretext_config(run, output_dir, budget)
        elif run.row.stage != "reference":
            config = train_config(run, output_dir, budget, init_dir)
        if not files.isfile(metrics_path):
            annotator = dataset_arguments(budget, run.variant, run.benchmark).get("annotator")
            build_dataset(
                output_dir,
                budget,
                run.variant,
                run.benchmark,
                log,
                selected(annotator)["model_dir_abs"] if annotator else "",
            )
        feature_seconds = 0.0
        if needs_feature_cache(run) and not files.isfile(metrics_path):
            feature_start = time.perf_counter()
            if build_feature_cache(output_dir, run, selected(features_cell(run))["model_dir_abs"], budget, log):
                feature_seconds = time.perf_counter() - feature_start
        if files.isfile(metrics_path):
            metrics = files.read_json(metrics_path)
            state = "reused"
        else:
            log(f"{prefix} ...")
            # A function of the run alone (not of its place in the plan): a subset of the plan (--benchmarks,
            # --variants) or a chunk restored into another plan trains exactly as the whole plan would.
            keras.utils.set_random_seed(run_seed(run))
            if run.row.stage == "reference":
                metrics = fit_reference(run, output_dir, budget)
            elif run.row.stage == "pretext":
                metrics = pretext.pretrain_rotation(config)
                keras.backend.clear_session()
            else:
                metrics = train_and_evaluate(config, preemption_notice)
            # The run's own time (of the invocation that finished it): results.md sums them.
            metrics["seconds"] = time.perf_counter() - start
            metrics["cpu_seconds"] = time.process_time() - cpu_start  # every thread of the process, on Linux
            metrics["feature_seconds"] = feature_seconds  # of `seconds`: the feature cache this run extracted
            run_files.write_json(metrics_path, metrics)
            state = f"{time.perf_counter() - start:.0f} s"
        seconds.append(metrics.get("seconds"))
        cpu_seconds.append(metrics.get("cpu_seconds"))
        chunk_runs.append(run)
        if i == len(runs) or ledger.chunk(runs[i]) != ledger.chunk(run):  # the chunk's last run (i counts from 1)
            if ledger_dir:
                ledger.record(
                    ledger_dir,
                    output_dir,
                    chunk_runs,
                    dataset_arguments(budget, run.variant, run.benchmark),
                    run_dir_of,
                )
            chunk_runs = []
        if run.row.stage == "source" and "multi_label" in variants:
            # The source classifier compiles the transfer benchmark's multi-label noise: its dataset (and the
            # noise the premise reports) exists once the source does, whether trained here or restored.
            build_dataset(output_dir, budget, "multi_label", "transfer", log, model_dir)
        if run.row.stage == "pretext":
            # Not a table row: the runs that start from it find it by its cell.
            log(f"{prefix}: rotation accuracy {100 * metrics['rotation_accuracy']:.1f} % on training images [{state}]")
            cells[run.cell] = [{"learning_rate": run.learning_rate, "val": 0.0, "model_dir_abs": model_dir}]
            pretexts[run.cell] = metrics["rotation_accuracy"]
            continue
        main = "mAP" if run.variant == "multi_label" else "top1"
        headline = f"val {100 * metrics['val']:.2f}, test {main} {100 * metrics[main]:.2f}"
        if run.variant == "multi_label":
            headline += f" APall {100 * metrics['APall']:.2f}"
        if metrics.get("best_step") is not None:
            headline += f", best step {metrics['best_step']}" + (" (stopped)" if metrics["stopped_early"] else "")
        log(f"{prefix}: {headline} [{state}, {time.perf_counter() - start_all:.0f} s elapsed]")
        cells.setdefault(run.cell, []).append(
            {
                "benchmark": run.benchmark,
                "variant": run.variant,
                "seed": run.seed,
                "fraction": run.fraction,
                "row": run.row.key,
                "label": run.row.label,
                "method": run.row.method,
                "stage": run.row.stage,
                "learning_rate": run.learning_rate,
                "model_dir": os.path.relpath(model_dir, output_dir),
                "model_dir_abs": model_dir,
                **{k: metrics[k] for k in ("mAP", "APall", "top1", "val", "best_step", "stopped_early")},
                **({"C": metrics["C"], "C_grid": metrics["grid"]} if "C" in metrics else {}),
                # The step cap `best_step` is counted against: `train_steps` counts every phase of a run (Veit
                # WP's cleaning-net pretraining too), as the trainer's step does; reference rows have none.
                "max_steps": None if run.row.stage == "reference" else config.train_steps,
                "seconds": metrics.get("seconds"),
                "cpu_seconds": metrics.get("cpu_seconds"),
                **({"pretext_rotation_accuracy": pretexts[run.init]} if run.init in pretexts else {}),
                "eval_history": metrics.get("eval_history", []),
            }
        )
    if preemption_notice is not None:
        preemption_notice.run = None
        preemption_notice.check()
    records = []
    for cell in cells:
        if cell in pretexts:
            continue
        record = dict(selected(cell))
        record.pop("model_dir_abs")
        record["grid"] = [{"learning_rate": r["learning_rate"], "val": r["val"]} for r in cells[cell]]
        records.append(record)
    return records, seconds, cpu_seconds
