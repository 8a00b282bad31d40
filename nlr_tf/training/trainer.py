"""The training loop: input -> model -> update step -> checkpoint -> logs.

One function, `train(config)`, runs every method. It checks the
configuration against the dataset before building anything, builds the
model under the strategy's scope (starting from a `noisy` model's checkpoint
when the method says so), restores the last checkpoint of `model_dir` if
there is one (so an interrupted run started again with the same command
resumes, its input streams taken up after the batches already trained on,
and ends at the same step count; under `--deterministic`, with the weights
and evaluations of the run never interrupted), and then runs steps in
`tf.function` loops of up to `log_steps`, writing TensorBoard scalars and
checkpoints as it goes. The final model is saved as `model.keras`.
"""

import dataclasses
import math
import os
import shutil
import time
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from nlr_tf.data import pipeline
from nlr_tf.data.feature_cache import FeatureCacheError, extract_features, load_feature_cache
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.mixing import mix_counts
from nlr_tf.data.schema import DatasetError, DatasetInfo
from nlr_tf.models.methods import Method, build_model
from nlr_tf.models.precision import apply_precision, wrap_optimizer
from nlr_tf.training import early_stopping
from nlr_tf.training import model_dir as run_files
from nlr_tf.training import optimizers as optim
from nlr_tf.training.checkpoints import restore_parts
from nlr_tf.training.checks import (
    ConfigError,
    check_config,
    mix_ratio,
    steps_per_epoch,
    train_backbone,
)
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.model_dir import CheckpointError
from nlr_tf.training.strategies import get_strategy, is_chief
from nlr_tf.training.tasks import Task, get_task, main_phase_start, phase_schedule


class TrainingDiverged(RuntimeError):
    """The loss became non-finite: the run stopped, keeping only the checkpoints written before."""


# === Model, optimizers, initial weights ===
def restore_init_checkpoint(model, method: Method, init: str) -> None:
    """Copies `method.restore` parts from a trained model's checkpoint; proves they matched."""
    try:
        prefix = restore_parts({name: getattr(model, name) for name in method.restore}, init)
    except CheckpointError as e:
        raise ConfigError(f"--init_checkpoint={e}") from None
    logging.info("initialized %s from %s", ", ".join(method.restore), prefix)


def _part_optimizers(config: TrainConfig, method: Method, info: DatasetInfo, trains_backbone: bool, model, task: Task):
    """One optimizer per trained part: head part and backbone at their (decayed) rates, the rest as the task says."""
    decay_steps = int(config.lr_decay_epochs * steps_per_epoch(config, method, info))
    schedule = lambda lr: optim.learning_rate_schedule(lr, config.lr_decay_rate, decay_steps)  # noqa: E731
    rates = {model.head_part: schedule(config.learning_rate)}
    if trains_backbone:
        rates["backbone"] = schedule(config.backbone_learning_rate or config.learning_rate)
    rates.update(task.part_learning_rates(config))
    return {
        part: wrap_optimizer(optim.build_optimizer(config.optimizer, lr, f"{part}_optimizer"), config.mixed_precision)
        for part, lr in rates.items()
    }


# === The step loop ===
def _make_loop(strategy, step_fn, loss_names, jit_compile=False):
    if jit_compile:
        # XLA compiles each replica's step; the loop around it reads the input iterator, which XLA cannot.
        step_fn = tf.function(step_fn, jit_compile=True, reduce_retracing=True)

    @tf.function
    def loop(iterator, num_steps):
        totals = {name: tf.constant(0.0) for name in loss_names}
        for _ in tf.range(num_steps):
            logs = strategy.run(step_fn, args=(next(iterator),))
            # Each replica's loss is its share of the global mean: sum them.
            totals = {
                name: totals[name] + strategy.reduce(tf.distribute.ReduceOp.SUM, logs[name], axis=None)
                for name in loss_names
            }
        return {name: value / tf.cast(num_steps, tf.float32) for name, value in totals.items()}

    return loop


def _write_run_config(config: TrainConfig, info: DatasetInfo, method: Method, trains_backbone: bool) -> dict:
    run_config = dataclasses.asdict(config)
    run_config.update(
        {
            "num_classes": info.num_classes,
            "multi_label": info.multi_label,
            "class_names": info.class_names,
            "family": method.family,
            "train_backbone": trains_backbone,
            "mix_ratio": mix_ratio(config, method),
            "dataset": info.path,
            "devices": list(config.devices),
            "model_format": run_files.MODEL_FORMAT,
        }
    )
    previous = run_files.read_run_config(config.model_dir)
    if previous is not None:
        for key in ("method", "num_classes", "backbone", "train_backbone", "family", "model_format"):
            if previous.get(key) != run_config.get(key):
                raise ConfigError(
                    f"--model_dir={config.model_dir} holds a run with {key}={previous.get(key)!r}, "
                    f"not {run_config.get(key)!r}: use a new --model_dir"
                )
        # Loss scaling adds optimizer state: a mixed_float16 checkpoint and another one do not restore into each other.
        if (previous.get("mixed_precision", "none") == "mixed_float16") != (config.mixed_precision == "mixed_float16"):
            raise ConfigError(
                f"--model_dir={config.model_dir} holds a run with mixed_precision="
                f"{previous.get('mixed_precision', 'none')!r}, not {config.mixed_precision!r}: resume it with the "
                "same --mixed_precision or use a new --model_dir"
            )
    return run_config


def _feature_cache(config: TrainConfig, info: DatasetInfo, method: Method, model, strategy) -> DatasetInfo:
    """Opens the run's feature cache, building it first from the model's backbone if absent."""
    # The frozen backbone's weights: the init checkpoint, or the weights flag.
    source = run_files.backbone_source(dataclasses.asdict(config) | {"train_backbone": False})
    if source == "none":
        raise ConfigError("a feature cache needs a trained backbone: pass --init_checkpoint or --backbone_weights")
    splits = [
        s for s, used in ((config.noisy_split, method.uses_noisy), (config.clean_split, method.uses_clean)) if used
    ]
    path = config.feature_cache
    if not os.path.isfile(os.path.join(path, "dataset.json")):
        resolver = getattr(strategy, "cluster_resolver", None)
        if resolver is not None and len(resolver.cluster_spec().as_dict().get("worker", [])) > 1:
            raise ConfigError(f"--feature_cache={path} does not exist: build it first with nlr-extract-features")
        logging.info("building the feature cache %s from %s", path, source)
        try:
            extract_features(
                model.backbone,
                info,
                path,
                backbone_name=config.backbone,
                backbone_source=source,
                image_size=config.image_size,
                dtype=config.cache_dtype or "float32",
            )
        except FeatureCacheError as e:  # a feature beyond float16's range
            raise ConfigError(f"--cache_dtype={config.cache_dtype}: {e}") from None
    try:
        return load_feature_cache(
            path,
            source_dataset=info.path,
            backbone_source=source,
            image_size=config.image_size,
            splits=splits,
            dtype=config.cache_dtype or None,
        )
    except (FeatureCacheError, DatasetError) as e:
        raise ConfigError(str(e)) from None


def weights_checksum(model) -> float:
    """Sum of the absolute values of every weight: equal on workers that agree."""
    return float(sum(tf.reduce_sum(tf.abs(tf.cast(v, tf.float64))) for v in model.weights))


def train(config: TrainConfig) -> dict[str, Any]:
    """Trains `config.method`; returns the final losses and step count.

    Args:
        config: `TrainConfig`.
    """
    info, method = check_config(config)
    task = get_task(method.family)  # what the family does around its model: checked above, prepared below
    trains_backbone = train_backbone(config, method, info)
    try:
        strategy = get_strategy(config.strategy, config.tpu, list(config.devices))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    replicas = strategy.num_replicas_in_sync
    if config.jit_compile and replicas > 1 and any("CPU" in d.upper() for d in strategy.extended.worker_devices):
        # TensorFlow's own limit: "Collectives are not yet implemented for CPU devices when compiling with XLA".
        raise ConfigError(
            f"--jit_compile with {replicas} replicas on CPU devices: XLA cannot compile the all-reduces a "
            "synchronized step needs on CPUs (it can on GPUs and TPUs); drop --jit_compile or train on one device"
        )
    try:
        if config.batch_size % replicas:
            raise ValueError(f"--batch_size={config.batch_size} does not split over {replicas} replicas")
        mix_counts(config.batch_size // replicas, mix_ratio(config, method))
    except ValueError as e:
        raise ConfigError(f"per replica: {e}") from None
    chief = is_chief(strategy)
    os.makedirs(config.model_dir, exist_ok=True)
    run_config = _write_run_config(config, info, method, trains_backbone)
    if chief:
        run_files.write_json(os.path.join(config.model_dir, run_files.CONFIG_FILE), run_config)
    if config.deterministic:
        keras.utils.set_random_seed(config.seed)

    # === Model and checkpoint ===
    with strategy.scope():
        model = build_model(
            method,
            info.num_classes,
            config.backbone,
            config.backbone_weights,
            config.image_size,
            train_backbone=trains_backbone,
            options=dataclasses.asdict(config) | {"multi_label": info.multi_label},
        )
        apply_precision(model, config.mixed_precision)
        model.set_part_optimizers(_part_optimizers(config, method, info, trains_backbone, model, task))
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        checkpoint = tf.train.Checkpoint(
            model=model, step=step, **{f"{p}_optimizer": o for p, o in model.part_optimizers.items()}
        )
    checkpoint_dir = os.path.join(config.model_dir, run_files.CHECKPOINT_DIR)
    if not chief:  # every MWMS worker saves; only the chief's copy is kept
        checkpoint_dir = os.path.join(config.model_dir, ".workers", str(strategy.cluster_resolver.task_id))
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=config.max_checkpoints)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logging.info("resumed from %s at step %d", manager.latest_checkpoint, int(step.numpy()))
    elif config.init_checkpoint:
        restore_init_checkpoint(model, method, config.init_checkpoint)

    # === Input ===
    data = _feature_cache(config, info, method, model, strategy) if config.feature_cache else info
    # What the family estimates from the data before its first step (a resumed run restores or reads it back).
    estimated = task.prepare(model, data, config, resumed=bool(manager.latest_checkpoint))
    input_config = InputConfig(
        backbone=config.backbone,
        image_size=config.image_size or None,
        augment=config.augment,
        random_flip=config.random_flip,
        seed=config.seed,
        deterministic=config.deterministic,
    )

    def batches(ratio: str, skip_steps: int):
        return iter(
            pipeline.distribute_train_dataset(
                strategy,
                data,
                config.batch_size,
                ratio,
                skip_steps=skip_steps,
                input_config=input_config,
                noisy_split=config.noisy_split,
                clean_split=config.clean_split,
                with_ids=model.needs_ids,
            )
        )

    # The task's phases before the main one (Veit's pretraining) have their own batch mix.
    schedule = phase_schedule(task.phases, config)

    # === Loop ===
    writer = (
        tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
        if chief
        else tf.summary.create_noop_writer()
    )
    if config.eval_split and not data.has_split(config.eval_split):
        raise ConfigError(f"--eval_split={config.eval_split} is absent from the feature cache {data.path!r}")
    best_dir = os.path.join(config.model_dir if chief else checkpoint_dir, run_files.BEST_DIR)
    evaluations = early_stopping.Evaluations(
        model, data, info, config, chief, best_dir, int(step.numpy()), main_phase_start(task.phases, config)
    )
    loops, live = {}, {}
    logs: dict[str, Any] = {}
    while int(step.numpy()) < config.train_steps and not evaluations.exhausted():
        current = int(step.numpy())
        phase, boundary = next((p, end) for p, end in schedule if current < end)
        next_checkpoint = (current // config.checkpoint_steps + 1) * config.checkpoint_steps
        num_steps = min(config.log_steps, boundary - current, next_checkpoint - current)
        if evaluations.next_due(current) is not None:
            num_steps = min(num_steps, evaluations.next_due(current) - current)
        if phase not in loops:
            if phase is None:
                step_fn, names, ratio = model.train_step, model.loss_names, mix_ratio(config, method)
            else:
                step_fn, names, ratio = getattr(model, f"{phase.name}_step"), phase.loss_names, phase.mix_ratio
            loops[phase] = _make_loop(strategy, step_fn, names, config.jit_compile)
            # Each phase's stream starts with the phase; a resumed run takes it up after the steps already trained.
            phase_start = max((end for _, end in schedule if end <= current), default=0)
            live[phase] = batches(ratio, skip_steps=current - phase_start)
        start = time.perf_counter()
        logs = {k: float(v) for k, v in loops[phase](live[phase], tf.constant(num_steps)).items()}
        elapsed = time.perf_counter() - start
        if not all(math.isfinite(v) for v in logs.values()):
            # Nothing more is saved: the checkpoints written so far hold the weights before the divergence.
            last = manager.latest_checkpoint
            raise TrainingDiverged(
                f"the loss became non-finite between steps {current} and {current + num_steps} "
                f"({', '.join(f'{k}={v:.4g}' for k, v in logs.items())}); "
                + (f"the last checkpoint before it is {last}" if last else "no checkpoint was written before it")
                + ": lower the learning rate (--learning_rate) and train again in a new --model_dir"
            )
        step.assign_add(num_steps)
        current = int(step.numpy())
        logs["examples_per_second"] = config.batch_size * num_steps / elapsed
        with writer.as_default(step=current):
            for name, value in logs.items():
                tf.summary.scalar(name if name == "examples_per_second" else f"losses/{name}", value)
            for part, opt in model.part_optimizers.items():
                tf.summary.scalar(f"learning_rate/{part}", optim.current_learning_rate(opt))
        logging.info("step %d/%d %s", current, config.train_steps, " ".join(f"{k}={v:.4g}" for k, v in logs.items()))
        if evaluations.due(current):
            evaluations.evaluate(current)
        stopping = evaluations.exhausted()
        if current % config.checkpoint_steps == 0 or current == config.train_steps or stopping:
            # The best weights first: a checkpoint is only ever written after the best weights its history knows.
            evaluations.save_best()
            manager.save(checkpoint_number=current)
            evaluations.commit()
    writer.flush()
    evaluated = evaluations.finish(int(step.numpy()))

    # === Outputs ===
    if not chief:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    result = {"step": int(step.numpy()), "method": method.name, **logs, **evaluated, **estimated}
    result["weights_checksum"] = weights_checksum(model)
    if chief:
        model.save(os.path.join(config.model_dir, run_files.MODEL_FILE))
        run_files.save_backbone_weights(
            model, config.backbone, os.path.join(config.model_dir, run_files.BACKBONE_WEIGHTS_FILE)
        )
        run_files.write_json(os.path.join(config.model_dir, run_files.RESULT_FILE), result)
    return result
