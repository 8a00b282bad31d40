"""Each run's settings: the `TrainConfig` (or rotation pretraining) the plan gives it, its folder and its seed.

A run's folder records its settings (`PLAN_FILE`); a folder that holds
another run's is refused.
"""

import dataclasses
import json
import os
import zlib
from typing import Any, Optional

from nlr_tf.data import files
from nlr_tf.reproduce.budgets import Budget
from nlr_tf.reproduce.datasets import ReproduceError, dataset_dir, feature_cache_dir
from nlr_tf.reproduce.plan import Run
from nlr_tf.training import model_dir as run_files
from nlr_tf.training import pretext
from nlr_tf.training.config import TrainConfig


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
    if budget.user is not None:
        config.strategy = budget.user.strategy  # nlr-compare: every row, one after another, on the strategy given
        # Reproducible (by default): the same command gives the same table, and a killed comparison resumes to it.
        config.deterministic = budget.user.deterministic
    if budget.user is not None and run.row.stage == "scratch" and budget.user.backbone_weights:
        config.backbone_weights = budget.user.backbone_weights  # nlr-compare --backbone_weights: imagenet or a file
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


def claim_run_dir(model_dir: str, wanted: dict[str, Any], defaults: Optional[dict[str, Any]] = None) -> None:
    """Records the plan's settings in the run dir; refuses a dir that holds another run.

    Args:
        defaults: dict. Settings a run dir recorded before they existed
            match when the plan keeps them at these values (a
            `TrainConfig` field added since, at its default).
    """
    wanted = json.loads(json.dumps(wanted))
    path = os.path.join(model_dir, PLAN_FILE)
    if files.isfile(path):
        recorded = files.read_json(path)
        added = json.loads(json.dumps({k: v for k, v in (defaults or {}).items() if k not in recorded}))
        if recorded | added == wanted:
            return
    elif not files.exists(model_dir):
        files.makedirs(model_dir)
        files.write_json(path, wanted)
        return
    raise ReproduceError(f"{model_dir} holds a run with other settings: use another --output_dir")
