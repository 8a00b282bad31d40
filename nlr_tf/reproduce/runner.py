"""Runs the reproduction plan: datasets, training, evaluation, in one process.

Every run writes an ordinary `nlr-train` model dir under OUTPUT_DIR/runs/
and its test metrics where `nlr-eval` puts them (MODEL_DIR/eval_test/
metrics.json), so any run can be inspected, evaluated or exported with the
other binaries. A run whose metrics already exist with the same settings is
reused: an interrupted reproduction started again continues where it
stopped (a half-trained run resumes from its last checkpoint).
"""

import dataclasses
import json
import os
import sys
import time
import zlib
from typing import Any, Callable, Optional, TextIO

import keras
from absl import logging

from nlr_tf.data.schema import DatasetInfo, load_dataset_info
from nlr_tf.reproduce import ledger
from nlr_tf.reproduce.budgets import Budget
from nlr_tf.reproduce.plan import Run, dataset_fractions, make_plan, source_cell
from nlr_tf.reproduce.rows import SHORT
from nlr_tf.training import model_dir as run_files
from nlr_tf.training import pretext
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.model_dir import load_trained_model, resolve_checkpoint
from nlr_tf.training.trainer import train
from tfrecords_tools import CONVERTER_VERSION
from tfrecords_tools.digits_mosaic import nested_split_name

DATA_SEED = 0  # one benchmark dataset; the seeds vary training


class ReproduceError(RuntimeError):
    """A reproduction that cannot go on."""


def dataset_dir(output_dir: str, variant: str, benchmark: str = "scratch") -> str:
    """A run's dataset: the source task's glyphs, or digits_mosaic (multi-label: one per benchmark, as the
    transfer benchmark's noisy labels come from the source classifier; single-label: one for both)."""
    if variant == "source":
        return os.path.join(output_dir, "data", "glyphs")
    suffix = "_transfer" if benchmark == "transfer" and variant == "multi_label" else ""
    return os.path.join(output_dir, "data", f"digits_mosaic_{SHORT[variant]}{suffix}")


def dataset_arguments(budget: Budget, variant: str, benchmark: str = "scratch") -> dict[str, Any]:
    """The converter's arguments of a run's dataset (recorded in its dataset.json, and in the plan's fingerprint)."""
    if variant == "source":
        train, val, test = budget.source_sizes
        return {"source": "glyphs", "seed": DATA_SEED, "num_train": train, "num_val": val, "num_test": test}
    sizes = budget.dataset_sizes or (None, None, None)
    arguments = {
        "source": "digits_mosaic",
        "variant": variant,
        "clean_fraction": budget.main_fraction,
        "nested_clean_fractions": list(dataset_fractions(budget, variant)),
        "seed": DATA_SEED,
        "num_train": sizes[0],
        "num_val": sizes[1],
        "num_test": sizes[2],
    }
    if benchmark == "transfer" and variant == "multi_label":
        # The annotator is the source run (its path inside the output folder) and how many predictions it keeps.
        arguments.update(annotator=source_cell(), annotator_top_k=budget.annotator_top_k)
    return arguments


def build_dataset(
    output_dir: str, budget: Budget, variant: str, benchmark: str, log: Callable[[str], None], annotator_dir: str = ""
) -> str:
    """Writes one dataset of the plan unless it is already there (with the same arguments); returns its path."""
    from tfrecords_tools.writer import write_dataset

    path = dataset_dir(output_dir, variant, benchmark)
    arguments = dataset_arguments(budget, variant, benchmark)
    if os.path.isfile(os.path.join(path, "dataset.json")):
        provenance = load_dataset_info(path).provenance
        if provenance.get("arguments") == arguments and provenance.get("converter_version") == CONVERTER_VERSION:
            return path
        raise ReproduceError(f"{path} holds a dataset built with other settings: use another --output_dir")
    log(f"building {path}")
    if variant == "source":
        from tfrecords_tools import glyphs

        conversion = glyphs.convert(
            seed=DATA_SEED,
            num_train=arguments["num_train"],
            num_val=arguments["num_val"],
            num_test=arguments["num_test"],
        )
    else:
        from tfrecords_tools import digits_mosaic

        annotator = None
        if "annotator" in arguments:
            from nlr_tf.evaluation.annotator import RunAnnotator

            annotator = RunAnnotator(annotator_dir, dataset=dataset_dir(output_dir, "source"))
        conversion = digits_mosaic.convert(
            variant,
            budget.main_fraction,
            DATA_SEED,
            arguments["num_train"],
            arguments["num_val"],
            arguments["num_test"],
            nested_fractions=tuple(arguments["nested_clean_fractions"]),
            annotator=annotator,
            annotator_top_k=arguments.get("annotator_top_k", 0),
        )
    write_dataset(conversion, path, arguments=arguments, progress=False)
    keras.backend.clear_session()
    return path


def build_datasets(output_dir: str, budget: Budget, variants, log: Callable[[str], None]) -> None:
    """Writes the datasets that need no trained model: every benchmark's but the transfer multi-label one (which
    the source run annotates, so `run_plan` writes it once that run has finished)."""
    for benchmark in budget.benchmarks:
        for variant in (("source",) if benchmark == "transfer" else ()) + tuple(variants):
            if not (benchmark == "transfer" and variant == "multi_label"):
                build_dataset(output_dir, budget, variant, benchmark, log)


def features_cell(run: Run) -> str:
    """The cell of the model whose feature cache a run reads: the one it starts from (heads, reference rows),
    else the seed's noisy model (CleanNet's reference features)."""
    return run.init if run.row.stage in ("heads", "reference") else run.noisy_cell


def feature_cache_dir(output_dir: str, run: Run) -> str:
    """One cache per seed: the frozen noisy backbone's features of every split the heads use."""
    return os.path.join(output_dir, "runs", features_cell(run), "features")


def needs_feature_cache(run: Run) -> bool:
    return run.row.stage in ("heads", "reference") or run.row.method == "cleannet"


def build_feature_cache(output_dir: str, run: Run, noisy_dir: str, budget: Budget, log: Callable[[str], None]) -> None:
    """What `nlr-extract-features` does, for the splits the heads train and are evaluated on."""
    from nlr_tf.data.feature_cache import extract_features

    path = feature_cache_dir(output_dir, run)
    if os.path.isfile(os.path.join(path, "dataset.json")):
        return
    log(f"extracting features of {noisy_dir}")
    backbone, run_config = _final_backbone(noisy_dir)
    splits = ["noisy", "val", "test"] + [nested_split_name(f) for f in dataset_fractions(budget, run.variant)]
    extract_features(
        backbone,
        load_dataset_info(dataset_dir(output_dir, run.variant, run.benchmark)),
        path,
        backbone_name=run_config["backbone"],
        backbone_source=resolve_checkpoint(noisy_dir)[0],
        image_size=run_config.get("image_size", 0),
        splits=splits,
        progress=False,
    )
    keras.backend.clear_session()


def _final_backbone(model_dir: str) -> tuple[keras.Model, dict[str, Any]]:
    """The backbone of a run's final model, and its run config.

    A run saved before method models were functional (its `model.keras`
    does not load): the backbone rebuilt and read from the checkpoint of
    its final weights.
    """
    from nlr_tf.models.backbones import build_backbone
    from nlr_tf.training.checkpoints import restore_parts

    run_config = run_files.read_run_config(model_dir) or {}
    if run_config.get("model_format", 1) == run_files.MODEL_FORMAT:
        model, run_config = load_trained_model(model_dir)
        return model.backbone, run_config
    backbone = build_backbone(run_config["backbone"], "none", run_config.get("image_size", 0), trainable=False)
    restore_parts({"backbone": backbone}, model_dir)
    return backbone, run_config


def train_config(run: Run, output_dir: str, budget: Budget, init_dir: str = "") -> TrainConfig:
    """The `TrainConfig` of one run of the plan: its row's settings under its stage's rules.

    Args:
        init_dir: str. The dir of the run it starts from, if any: a noisy
            model dir, or (for a `scratch` row) a pretraining run's dir,
            whose backbone weights it loads.
    """
    stage = budget.stage(run.row.stage)
    settings = run.row.config()
    pretrain = settings.pop("pretrain", False)
    settings["clean_split"] = run.clean_split
    settings.update({field: factor * run.learning_rate for field, factor in run.row.lr_fields})
    pretrain_steps = budget.cleaning_pretrain_steps if pretrain else 0
    config = TrainConfig(
        method=run.row.method,
        dataset=dataset_dir(output_dir, run.variant, run.benchmark),
        model_dir=run_dir(output_dir, run),
        backbone=budget.network(run.benchmark)[0],
        image_size=budget.network(run.benchmark)[1],
        optimizer="adam",
        batch_size=stage.batch_size,
        # Veit's pretraining runs before, and outside, the joint budget that every row of the stage shares.
        train_steps=pretrain_steps + stage.max_steps,
        cleaning_pretrain_steps=pretrain_steps,
        checkpoint_steps=stage.max_steps,
        log_steps=min(50, stage.eval_steps),
        eval_split="val",
        eval_steps=stage.eval_steps,
        early_stopping_patience=stage.patience,
        restore_best=True,
        seed=run.seed,
        **settings,
    )
    if run.init and run.row.stage == "scratch":
        # A pretraining run's (rotation, or the transfer benchmark's source) backbone weights, as ImageNet's file.
        config.backbone_weights = os.path.join(init_dir, run_files.BACKBONE_WEIGHTS_FILE)
    elif run.init:
        config.init_checkpoint = init_dir
    if run.row.stage == "heads":
        config.train_backbone = False
        config.feature_cache = feature_cache_dir(output_dir, run)
    elif run.row.stage == "whole":
        config.train_backbone = True
    if run.row.method == "cleannet":
        config.cleannet_steps = budget.cleannet_steps
        if run.row.stage != "heads":
            config.reference_features = feature_cache_dir(output_dir, run)
    return config


def pretext_config(run: Run, output_dir: str, budget: Budget) -> pretext.RotationConfig:
    """A `pretext` row's run: rotation prediction on the training images (the `noisy` split) of its variant."""
    stage = budget.stage(run.row.stage)
    return pretext.RotationConfig(
        dataset=dataset_dir(output_dir, run.variant, run.benchmark),
        output_dir=run_dir(output_dir, run),
        split="noisy",
        backbone=budget.network(run.benchmark)[0],
        image_size=budget.network(run.benchmark)[1],
        batch_size=stage.batch_size,
        steps=stage.max_steps,
        learning_rate=run.learning_rate,
        seed=run.seed,
    )


def planned_settings(run: Run, output_dir: str, budget: Budget, init_dir: str = "") -> dict[str, Any]:
    """What a run's folder records as its settings (`PLAN_FILE`), as JSON values."""
    if run.row.stage == "reference":
        settings = {"row": run.row.key, "fraction": run.fraction, "split": run.clean_split}
    elif run.row.stage == "pretext":
        settings = dataclasses.asdict(pretext_config(run, output_dir, budget))
    else:
        settings = dataclasses.asdict(train_config(run, output_dir, budget, init_dir))
    return json.loads(json.dumps(settings))


def run_seed(run: Run) -> int:
    """The random seed a run's weights start from: its training seed and a hash of its name."""
    return (run.seed * 1_000_003 + zlib.crc32(run.name.encode())) % 2**31


def run_dir(output_dir: str, run: Run) -> str:
    return os.path.join(output_dir, "runs", run.name)


PLAN_FILE = "reproduce_run.json"  # the run's TrainConfig as the plan made it
CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def _claim_run_dir(model_dir: str, wanted: dict[str, Any], defaults: Optional[dict[str, Any]] = None) -> None:
    """Records the plan's settings in the run dir; refuses a dir that holds another run.

    Args:
        defaults: dict. Settings a run dir recorded before they existed
            match when the plan keeps them at these values (a
            `TrainConfig` field added since, at its default).
    """
    wanted = json.loads(json.dumps(wanted))
    path = os.path.join(model_dir, PLAN_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            recorded = json.load(f)
        added = json.loads(json.dumps({k: v for k, v in (defaults or {}).items() if k not in recorded}))
        if recorded | added == wanted:
            return
    elif not os.path.exists(model_dir):
        os.makedirs(model_dir)
        with open(path, "w") as f:
            json.dump(wanted, f, indent=1)
        return
    raise ReproduceError(f"{model_dir} holds a run with other settings: use another --output_dir")


def train_and_evaluate(config: TrainConfig) -> dict[str, Any]:
    """Trains one run (resuming if interrupted) and returns its test metrics and its best validation result."""
    from nlr_tf.evaluation.evaluator import evaluate

    result = train(config)
    model, run_config = load_trained_model(config.model_dir)
    info: DatasetInfo = load_dataset_info(config.feature_cache or config.dataset)
    metrics = evaluate(model, info, "test", backbone=run_config["backbone"], image_size=run_config.get("image_size", 0))
    metric = "mAP" if info.multi_label else "top1"
    metrics.update(
        val=result[f"best_{metric}"],
        best_step=result["best_step"],
        stopped_early=result["stopped_early"],
        eval_history=result["eval_history"],
    )
    keras.backend.clear_session()
    return metrics


def fit_reference(run: Run, output_dir: str, budget: Budget) -> dict[str, Any]:
    """The logistic-regression reference row of a run: fit on the cache's train split, its C chosen on val."""
    from nlr_tf.evaluation.linear_reference import logistic_regression_reference

    cache = load_dataset_info(feature_cache_dir(output_dir, run))
    split = run.clean_split if run.row.method == "clean" else "noisy"
    metric = "mAP" if cache.multi_label else "top1"
    fits = {
        C: logistic_regression_reference(cache, split, run.row.method, ("val", "test"), C=C) for C in budget.reference_c
    }
    C = max(fits, key=lambda c: (fits[c]["val"][metric], -c))
    return {
        **fits[C]["test"],
        "val": fits[C]["val"][metric],
        "C": C,
        "grid": [{"C": c, "val": fits[c]["val"][metric]} for c in fits],
        "best_step": None,
        "stopped_early": None,
        "eval_history": [],
    }


def run_plan(
    output_dir: str,
    budget: Budget,
    variants,
    *,
    out: TextIO = sys.stdout,
    ledger_dir: str = "",
) -> tuple[list[dict[str, Any]], list[Optional[float]], list[Optional[float]]]:
    """Trains and evaluates every run (on the datasets `build_datasets` wrote).

    Args:
        ledger_dir: str. A ledger folder (`nlr_tf.reproduce.ledger`): its
            finished chunks are reused, and each chunk finished here is
            added to it.

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
    logging.set_verbosity(logging.WARNING)
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
        where = "" if run.fraction is None else f" {100 * run.fraction:g}% clean"
        rate = "" if run.learning_rate is None else f", lr {run.learning_rate:g}"
        prefix = f"[{i:>3}/{len(runs)}] {run.benchmark} {run.variant} seed {run.seed}{where}: {run.row.label}{rate}"
        model_dir = run_dir(output_dir, run)
        metrics_path = run_files.metrics_path(model_dir, "test")
        start, cpu_start = time.perf_counter(), time.process_time()
        init_dir = selected(run.init)["model_dir_abs"] if run.init else ""
        settings = planned_settings(run, output_dir, budget, init_dir)
        _claim_run_dir(model_dir, settings, CONFIG_DEFAULTS if run.row.stage not in ("reference", "pretext") else None)
        if run.row.stage == "pretext":
            config = pretext_config(run, output_dir, budget)
        elif run.row.stage != "reference":
            config = train_config(run, output_dir, budget, init_dir)
        if not os.path.isfile(metrics_path):
            annotator = dataset_arguments(budget, run.variant, run.benchmark).get("annotator")
            build_dataset(
                output_dir,
                budget,
                run.variant,
                run.benchmark,
                log,
                selected(annotator)["model_dir_abs"] if annotator else "",
            )
        if needs_feature_cache(run) and not os.path.isfile(metrics_path):
            build_feature_cache(output_dir, run, selected(features_cell(run))["model_dir_abs"], budget, log)
        if os.path.isfile(metrics_path):
            with open(metrics_path) as f:
                metrics = json.load(f)
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
                metrics = train_and_evaluate(config)
            # The run's own time (of the invocation that finished it): results.md sums them.
            metrics["seconds"] = time.perf_counter() - start
            metrics["cpu_seconds"] = time.process_time() - cpu_start  # every thread of the process, on Linux
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
    records = []
    for cell in cells:
        if cell in pretexts:
            continue
        record = dict(selected(cell))
        record.pop("model_dir_abs")
        record["grid"] = [{"learning_rate": r["learning_rate"], "val": r["val"]} for r in cells[cell]]
        records.append(record)
    return records, seconds, cpu_seconds
