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
from typing import Any, Callable, TextIO

import keras
from absl import logging

from nlr_tf.data.schema import DatasetInfo, load_dataset_info
from nlr_tf.reproduce.plan import SHORT, Budget, Run, dataset_fractions, make_plan
from nlr_tf.training.trainer import TrainConfig, train
from tfrecords_tools.digits_mosaic import nested_split_name

DATA_SEED = 0  # one benchmark dataset; the seeds vary training


class ReproduceError(RuntimeError):
    """A reproduction that cannot go on."""


def dataset_dir(output_dir: str, variant: str) -> str:
    return os.path.join(output_dir, "data", f"digits_mosaic_{SHORT[variant]}")


def build_datasets(output_dir: str, budget: Budget, variants, log: Callable[[str], None]) -> None:
    """Writes each variant's digits_mosaic dataset, with every fraction's clean split, unless already there."""
    from tfrecords_tools import digits_mosaic
    from tfrecords_tools.writer import write_dataset

    sizes = budget.dataset_sizes or (None, None, None)
    for variant in variants:
        path = dataset_dir(output_dir, variant)
        fractions = dataset_fractions(budget, variant)
        arguments = {
            "source": "digits_mosaic",
            "variant": variant,
            "clean_fraction": budget.ablation_fraction if variant == "multi_label" else budget.single_label_fraction,
            "nested_clean_fractions": list(fractions),
            "seed": DATA_SEED,
            "num_train": sizes[0],
            "num_val": sizes[1],
            "num_test": sizes[2],
        }
        if os.path.isfile(os.path.join(path, "dataset.json")):
            if load_dataset_info(path).provenance.get("arguments") == arguments:
                continue
            raise ReproduceError(f"{path} holds a dataset built with other settings: use another --output_dir")
        log(f"building {path}")
        conversion = digits_mosaic.convert(
            variant,
            arguments["clean_fraction"],
            DATA_SEED,
            *sizes,
            nested_fractions=fractions,
        )
        write_dataset(conversion, path, arguments=arguments, progress=False)


def feature_cache_dir(output_dir: str, run: Run) -> str:
    """One cache per seed: the frozen noisy backbone's features of every split the heads use."""
    return os.path.join(output_dir, "runs", run.init, "features")


def build_feature_cache(output_dir: str, run: Run, budget: Budget, log: Callable[[str], None]) -> None:
    """What `nlr-extract-features` does, for the splits the heads train and are evaluated on."""
    from nlr_tf.data.feature_cache import extract_features
    from nlr_tf.evaluation.evaluator import load_trained_model
    from nlr_tf.training.checkpoints import resolve_checkpoint

    path = feature_cache_dir(output_dir, run)
    if os.path.isfile(os.path.join(path, "dataset.json")):
        return
    noisy_dir = os.path.join(output_dir, "runs", run.init)
    log(f"extracting features of {noisy_dir}")
    model, run_config = load_trained_model(noisy_dir)
    splits = ["noisy", "val", "test"] + [nested_split_name(f) for f in dataset_fractions(budget, run.variant)]
    extract_features(
        model.backbone,
        load_dataset_info(dataset_dir(output_dir, run.variant)),
        path,
        backbone_name=run_config["backbone"],
        backbone_source=resolve_checkpoint(noisy_dir)[0],
        image_size=run_config.get("image_size", 0),
        splits=splits,
        progress=False,
    )
    keras.backend.clear_session()


def train_config(run: Run, output_dir: str) -> TrainConfig:
    """The `TrainConfig` of one run of the plan."""
    settings = run.row.config()
    pretrain = settings.pop("pretrain", False)
    settings["clean_split"] = run.clean_split
    config = TrainConfig(
        method=run.row.method,
        dataset=dataset_dir(output_dir, run.variant),
        model_dir=run_dir(output_dir, run),
        backbone="small_cnn",
        optimizer="adam",
        train_steps=run.steps,
        checkpoint_steps=max(run.steps // 2, 1),
        log_steps=min(50, run.steps),
        seed=run.seed,
        **settings,
    )
    if run.init:
        config.init_checkpoint = os.path.join(output_dir, "runs", run.init)
    if run.row.stage == "heads":
        config.train_backbone = False
        config.feature_cache = feature_cache_dir(output_dir, run)
    elif run.row.stage == "whole":
        config.train_backbone = True
    if pretrain:
        config.cleaning_pretrain_steps = max(1, run.steps // 4)
    if run.curve_steps:
        config.eval_split, config.eval_steps = "val", run.curve_steps
    return config


def run_dir(output_dir: str, run: Run) -> str:
    return os.path.join(output_dir, "runs", run.name)


PLAN_FILE = "reproduce_run.json"  # the run's TrainConfig as the plan made it


def _claim_run_dir(config: TrainConfig) -> None:
    """Records the plan's config in the run dir; refuses a dir that holds another run."""
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    path = os.path.join(config.model_dir, PLAN_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            if json.load(f) == wanted:
                return
    elif not os.path.exists(config.model_dir):
        os.makedirs(config.model_dir)
        with open(path, "w") as f:
            json.dump(wanted, f, indent=1)
        return
    raise ReproduceError(f"{config.model_dir} holds a run with other settings: use another --output_dir")


def evaluate_run(config: TrainConfig) -> dict[str, Any]:
    """Test metrics of a finished run, from the feature cache when it trained on one (same numbers, no backbone)."""
    from nlr_tf.evaluation.evaluator import evaluate, load_trained_model

    model, run_config = load_trained_model(config.model_dir)
    info: DatasetInfo = load_dataset_info(config.feature_cache or config.dataset)
    return evaluate(model, info, "test", backbone=run_config["backbone"], image_size=run_config.get("image_size", 0))


def run_plan(
    output_dir: str,
    budget: Budget,
    variants,
    *,
    out: TextIO = sys.stdout,
) -> list[dict[str, Any]]:
    """Trains and evaluates every run (on the datasets `build_datasets` wrote); returns one record per run."""

    def log(message: str) -> None:
        print(message, file=out, flush=True)

    runs = make_plan(budget, variants)
    records = []
    logging.set_verbosity(logging.WARNING)
    start_all = time.perf_counter()
    for i, run in enumerate(runs, 1):
        config = train_config(run, output_dir)
        metrics_path = os.path.join(config.model_dir, "eval_test", "metrics.json")
        where = "" if run.fraction is None else f" {100 * run.fraction:g}% clean"
        prefix = f"[{i:>3}/{len(runs)}] {run.variant} seed {run.seed}{where}: {run.row.label} ({run.steps} steps)"
        _claim_run_dir(config)
        start = time.perf_counter()
        if run.row.stage == "heads":
            build_feature_cache(output_dir, run, budget, log)
        if os.path.isfile(metrics_path):
            with open(metrics_path) as f:
                metrics = json.load(f)
            state = "reused"
        else:
            log(f"{prefix} ...")
            keras.utils.set_random_seed(run.seed * 1000 + i)
            train(config)
            metrics = evaluate_run(config)
            os.makedirs(os.path.dirname(metrics_path), exist_ok=True)
            with open(metrics_path + ".tmp", "w") as f:
                json.dump(metrics, f, indent=1)
            os.replace(metrics_path + ".tmp", metrics_path)
            keras.backend.clear_session()
            state = f"{time.perf_counter() - start:.0f} s"
        history = []
        history_path = os.path.join(config.model_dir, "eval_history.json")
        if run.curve_steps and os.path.isfile(history_path):
            with open(history_path) as f:
                history = json.load(f)
        headline = (
            f"top-1 {100 * metrics['top1']:.2f}"
            if run.variant == "single_label"
            else (f"mAP {100 * metrics['mAP']:.2f} APall {100 * metrics['APall']:.2f}")
        )
        log(f"{prefix}: {headline} [{state}, {time.perf_counter() - start_all:.0f} s elapsed]")
        records.append(
            {
                "variant": run.variant,
                "seed": run.seed,
                "fraction": run.fraction,
                "row": run.row.key,
                "label": run.row.label,
                "method": run.row.method,
                "steps": run.steps,
                "model_dir": os.path.relpath(config.model_dir, output_dir),
                "mAP": metrics["mAP"],
                "APall": metrics["APall"],
                "top1": metrics["top1"],
                "eval_history": history,
            }
        )
    return records
