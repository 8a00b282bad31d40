"""The training loop: input -> model -> update step -> checkpoint -> logs.

One function, `train(config)`, runs every method. It checks the
configuration against the dataset before building anything, builds the
model under the strategy's scope (starting from a `noisy` model's checkpoint
when the method says so), restores the last checkpoint of `model_dir` if
there is one (so an interrupted run started again with the same command
resumes and ends at the same step count), and then runs steps in
`tf.function` loops of up to `log_steps`, writing TensorBoard scalars and
checkpoints as it goes. The final model is saved as `model.keras`.
"""

import dataclasses
import os
import shutil
import time
from typing import Any, Optional

import keras
import tensorflow as tf
from absl import logging

from nlr_tf.data import pipeline
from nlr_tf.data.feature_cache import FeatureCacheError, extract_features, load_feature_cache
from nlr_tf.data.image_sizes import DEFAULT_IMAGE_SIZE
from nlr_tf.data.schema import DatasetError, DatasetInfo, load_dataset_info
from nlr_tf.models import metrics, prediction
from nlr_tf.models.backbones import resolve_weights
from nlr_tf.models.methods import Method, build_model, get_method
from nlr_tf.training import model_dir as run_files
from nlr_tf.training import optimizers as optim
from nlr_tf.training.checkpoints import restore_parts
from nlr_tf.training.config import EVAL_METRICS, TrainConfig
from nlr_tf.training.model_dir import CheckpointError, resolve_checkpoint
from nlr_tf.training.strategies import get_strategy, is_chief


class ConfigError(ValueError):
    """A training configuration that cannot work with its dataset or checkpoint."""


# === Checks before anything is built ===
def check_config(config: TrainConfig) -> tuple[DatasetInfo, Method]:
    """Fails with one clear line for any configuration that cannot run."""
    try:
        method = get_method(config.method)
        info = load_dataset_info(config.dataset)
    except (DatasetError, ValueError) as e:
        raise ConfigError(str(e)) from None
    where = f"dataset {config.dataset!r} (splits: {', '.join(sorted(info.splits))})"
    if method.uses_noisy and not info.has_split(config.noisy_split):
        raise ConfigError(f"--method={method.name} trains on noisy split {config.noisy_split!r}, absent from {where}")
    if method.uses_clean and not info.has_split(config.clean_split):
        raise ConfigError(
            f"--method={method.name} needs clean data but split {config.clean_split!r} is absent from {where}"
        )
    if method.init == "required" and not config.init_checkpoint:
        raise ConfigError(f"--method={method.name} fine-tunes a noisy model: pass --init_checkpoint=NOISY_MODEL_DIR")
    if method.init == "none" and config.init_checkpoint:
        raise ConfigError(f"--method={method.name} trains from scratch (or ImageNet); drop --init_checkpoint")
    if config.init_checkpoint:
        try:
            _, run_config = resolve_checkpoint(config.init_checkpoint)
        except CheckpointError as e:
            raise ConfigError(f"--init_checkpoint={e}") from None
        if run_config is not None:
            if run_config.get("num_classes") != info.num_classes:
                raise ConfigError(
                    f"--init_checkpoint={config.init_checkpoint} has {run_config.get('num_classes')} classes but "
                    f"dataset {config.dataset!r} has {info.num_classes}"
                )
            if run_config.get("backbone") != config.backbone:
                raise ConfigError(
                    f"--init_checkpoint={config.init_checkpoint} has backbone {run_config.get('backbone')!r}, "
                    f"not --backbone={config.backbone}"
                )
    if config.cleaning_pretrain_steps:
        if method.family != "label_cleaning":
            raise ConfigError("--cleaning_pretrain_steps applies to --method=label_cleaning only")
        if config.cleaning_pretrain_steps >= config.train_steps:
            raise ConfigError(
                f"--cleaning_pretrain_steps={config.cleaning_pretrain_steps} leaves no joint training in "
                f"--train_steps={config.train_steps}"
            )
    if config.eval_steps and not config.eval_split:
        raise ConfigError("--eval_steps needs --eval_split")
    if (config.early_stopping_patience or config.restore_best) and not config.eval_steps:
        raise ConfigError("--early_stopping_patience and --restore_best need --eval_split and --eval_steps")
    if config.eval_metric and config.eval_metric not in EVAL_METRICS:
        raise ConfigError(f"--eval_metric must be one of {', '.join(EVAL_METRICS)}, got {config.eval_metric!r}")
    if config.early_stopping_patience < 0:
        raise ConfigError(f"--early_stopping_patience must be >= 0, got {config.early_stopping_patience}")
    if config.eval_split and not info.has_split(config.eval_split):
        raise ConfigError(f"--eval_split={config.eval_split} is absent from {where}")
    if config.feature_cache and train_backbone(config, method, info):
        raise ConfigError("a feature cache holds frozen-backbone features: it needs --train_backbone=false")
    if config.train_steps < 1 or config.batch_size < 1 or config.checkpoint_steps < 1 or config.log_steps < 1:
        raise ConfigError("--train_steps, --batch_size, --checkpoint_steps and --log_steps must be >= 1")
    if config.eval_steps < 0:
        raise ConfigError(f"--eval_steps must be >= 0, got {config.eval_steps}")
    try:
        pipeline.mix_counts(config.batch_size, mix_ratio(config, method))
        resolve_weights(config.backbone, config.backbone_weights)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return info, method


def eval_metric(config: TrainConfig, info: DatasetInfo) -> str:
    """The metric that selects the best evaluation: the flag, else mAP (multi-label) or top-1 (single-label)."""
    return config.eval_metric or ("mAP" if info.multi_label else "top1")


def train_backbone(config: TrainConfig, method: Method, info: DatasetInfo) -> bool:
    """The flag if set; else the method's default; else the papers' scheme."""
    if config.train_backbone is not None:
        return config.train_backbone
    if method.train_backbone is not None:
        return method.train_backbone
    return not info.multi_label  # multi-label: heads on a frozen backbone; single-label: whole network


def mix_ratio(config: TrainConfig, method: Method) -> str:
    return config.mix_ratio or method.mix_ratio


def _steps_per_epoch(config: TrainConfig, method: Method, info: DatasetInfo) -> int:
    noisy, clean = pipeline.mix_counts(config.batch_size, mix_ratio(config, method))
    split, per_batch = (config.noisy_split, noisy) if noisy else (config.clean_split, clean)
    return max(1, info.splits[split].num_records // per_batch)


# === Model, optimizers, initial weights ===
def restore_init_checkpoint(model, method: Method, init: str) -> None:
    """Copies `method.restore` parts from a trained model's checkpoint; proves they matched."""
    try:
        prefix = restore_parts({name: getattr(model, name) for name in method.restore}, init)
    except CheckpointError as e:
        raise ConfigError(f"--init_checkpoint={e}") from None
    logging.info("initialized %s from %s", ", ".join(method.restore), prefix)


def _part_optimizers(config: TrainConfig, method: Method, info: DatasetInfo, trains_backbone: bool):
    decay_steps = int(config.lr_decay_epochs * _steps_per_epoch(config, method, info))
    schedule = lambda lr: optim.learning_rate_schedule(lr, config.lr_decay_rate, decay_steps)  # noqa: E731
    head = "heads" if method.family == "noise_regularization" else "classifier"
    parts = {head: optim.build_optimizer(config.optimizer, schedule(config.learning_rate), f"{head}_optimizer")}
    if trains_backbone:
        lr = config.backbone_learning_rate or config.learning_rate
        parts["backbone"] = optim.build_optimizer(config.optimizer, schedule(lr), "backbone_optimizer")
    if method.family == "label_cleaning":
        if config.cleaning_pretrain_steps:
            lr = keras.optimizers.schedules.PiecewiseConstantDecay(
                [config.cleaning_pretrain_steps], [config.cleaning_learning_rate, config.cleaning_joint_learning_rate]
            )
        else:
            lr = config.cleaning_learning_rate
        parts["cleaning"] = optim.build_optimizer(config.optimizer, lr, "cleaning_optimizer")
    return parts


# === The step loop ===
def _make_loop(strategy, step_fn, loss_names):
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
        }
    )
    previous = run_files.read_run_config(config.model_dir)
    if previous is not None:
        for key in ("method", "num_classes", "backbone", "train_backbone", "family"):
            if previous.get(key) != run_config.get(key):
                raise ConfigError(
                    f"--model_dir={config.model_dir} holds a run with {key}={previous.get(key)!r}, "
                    f"not {run_config.get(key)!r}: use a new --model_dir"
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
        extract_features(
            model.backbone,
            info,
            path,
            backbone_name=config.backbone,
            backbone_source=source,
            image_size=config.image_size,
        )
    try:
        return load_feature_cache(
            path, source_dataset=info.path, backbone_source=source, image_size=config.image_size, splits=splits
        )
    except (FeatureCacheError, DatasetError) as e:
        raise ConfigError(str(e)) from None


_EVAL_IN_MEMORY_BYTES = 256 << 20


def _split_evaluator(model, data: DatasetInfo, config: TrainConfig):
    """A function returning mAP, APall and top-1 of the model on `config.eval_split` (from the feature cache if
    training uses one); its input pipeline is built once and read again at every evaluation."""
    # Cached features are small: large batches. Images: the training batch, which fits in memory.
    batch_size = 1024 if data.feature_dim else config.batch_size
    kwargs = dict(backbone=config.backbone, image_size=config.image_size, batch_size=batch_size)
    dataset = prediction.split_dataset(data, config.eval_split, **kwargs)
    # A split whose decoded inputs fit in a small memory budget is read once and kept: reading the records again
    # at every evaluation (a new iterator over the shards) cost more than the evaluation itself.
    side = config.image_size or DEFAULT_IMAGE_SIZE[config.backbone]
    bytes_per_record = 4 * (data.feature_dim or side * side * 3)
    if data.splits[config.eval_split].num_records * bytes_per_record <= _EVAL_IN_MEMORY_BYTES:
        dataset = list(dataset)

    def evaluate() -> dict[str, float]:
        p = prediction.predict(model, data, config.eval_split, dataset=dataset, **kwargs)
        report = metrics.evaluate(p["scores"], p["verified_labels"], p["verified_mask"])
        return {"mAP": report.map, "APall": report.ap_all, "top1": report.top1}

    return evaluate


def weights_checksum(model) -> float:
    """Sum of the absolute values of every weight: equal on workers that agree."""
    return float(sum(tf.reduce_sum(tf.abs(tf.cast(v, tf.float64))) for v in model.weights))


def best_evaluation(history: list[dict], metric: str, after: int = 0) -> Optional[dict]:
    """The evaluation with the highest `metric` (the earliest on ties), among those after step `after`."""
    entries = [e for e in history if e["step"] > after]
    return max(entries, key=lambda e: (e[metric], -e["step"])) if entries else None


def patience_exhausted(history: list[dict], metric: str, patience: int, after: int = 0) -> bool:
    """True once `patience` evaluations in a row have not beaten the best one."""
    best = best_evaluation(history, metric, after)
    return bool(patience) and best is not None and sum(e["step"] > best["step"] for e in history) >= patience


def train(config: TrainConfig) -> dict[str, Any]:
    """Trains `config.method`; returns the final losses and step count.

    Args:
        config: `TrainConfig`.
    """
    info, method = check_config(config)
    trains_backbone = train_backbone(config, method, info)
    try:
        strategy = get_strategy(config.strategy, config.tpu, list(config.devices))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    replicas = strategy.num_replicas_in_sync
    try:
        if config.batch_size % replicas:
            raise ValueError(f"--batch_size={config.batch_size} does not split over {replicas} replicas")
        pipeline.mix_counts(config.batch_size // replicas, mix_ratio(config, method))
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
            activation=config.activation,
            alpha=config.alpha,
            hidden_dim=config.hidden_dim,
        )
        model.set_part_optimizers(_part_optimizers(config, method, info, trains_backbone))
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

    def batches(ratio: str):
        return iter(
            pipeline.distribute_train_dataset(
                strategy,
                data,
                config.batch_size,
                ratio,
                backbone=config.backbone,
                image_size=config.image_size or None,
                noisy_split=config.noisy_split,
                clean_split=config.clean_split,
                seed=config.seed,
                deterministic=config.deterministic,
                augment=config.augment,
                random_flip=config.random_flip,
            )
        )

    # Veit's pretraining fits the cleaning net on the clean set alone: its batches hold clean examples only.
    iterators = {"train": lambda: batches(mix_ratio(config, method)), "pretrain": lambda: batches("0:1")}

    # === Loop ===
    writer = (
        tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
        if chief
        else tf.summary.create_noop_writer()
    )
    eval_writer = None
    if config.eval_steps and chief:
        eval_writer = tf.summary.create_file_writer(run_files.eval_dir(config.model_dir, config.eval_split))
    if config.eval_split and not data.has_split(config.eval_split):
        raise ConfigError(f"--eval_split={config.eval_split} is absent from the feature cache {data.path!r}")
    # Evaluations select the best weights and stop the run only after the pretraining phase.
    metric, after = eval_metric(config, info), config.cleaning_pretrain_steps
    best_manager = None
    if config.restore_best:
        best_dir = os.path.join(config.model_dir, run_files.BEST_DIR)
        if not chief:
            best_dir = os.path.join(checkpoint_dir, run_files.BEST_DIR)
        best_checkpoint = tf.train.Checkpoint(model=model)
        best_manager = tf.train.CheckpointManager(best_checkpoint, best_dir, max_to_keep=1)
    # The best weights since the last checkpoint stay in memory (step, values) and are written with it, so the
    # best dir always matches the evaluation history a resumed run restores, and a new best costs no disk write.
    pending_best = None

    def save_checkpoint(current: int) -> None:
        nonlocal pending_best
        manager.save(checkpoint_number=current)
        if pending_best is not None:
            weights = model.get_weights()
            model.set_weights(pending_best[1])
            best_manager.save(checkpoint_number=pending_best[0])
            model.set_weights(weights)
            pending_best = None

    evaluate_split = _split_evaluator(model, data, config) if config.eval_steps else None
    # A resumed run keeps the evaluations up to its restored step.
    eval_history = [e for e in run_files.read_eval_history(config.model_dir) if e["step"] <= int(step.numpy())]
    loops, live = {}, {}
    logs: dict[str, Any] = {}
    while int(step.numpy()) < config.train_steps and not patience_exhausted(
        eval_history, metric, config.early_stopping_patience, after
    ):
        current = int(step.numpy())
        phase = "pretrain" if current < config.cleaning_pretrain_steps else "train"
        boundary = config.cleaning_pretrain_steps if phase == "pretrain" else config.train_steps
        next_checkpoint = (current // config.checkpoint_steps + 1) * config.checkpoint_steps
        num_steps = min(config.log_steps, boundary - current, next_checkpoint - current)
        if config.eval_steps:
            num_steps = min(num_steps, (current // config.eval_steps + 1) * config.eval_steps - current)
        if phase not in loops:
            step_fn = model.pretrain_step if phase == "pretrain" else model.train_step
            names = model.pretrain_loss_names if phase == "pretrain" else model.loss_names
            loops[phase] = _make_loop(strategy, step_fn, names)
            live[phase] = iterators[phase]()
        start = time.perf_counter()
        logs = {k: float(v) for k, v in loops[phase](live[phase], tf.constant(num_steps)).items()}
        elapsed = time.perf_counter() - start
        step.assign_add(num_steps)
        current = int(step.numpy())
        logs["examples_per_second"] = config.batch_size * num_steps / elapsed
        with writer.as_default(step=current):
            for name, value in logs.items():
                tf.summary.scalar(name if name == "examples_per_second" else f"losses/{name}", value)
            for part, opt in model.part_optimizers.items():
                tf.summary.scalar(f"learning_rate/{part}", optim.current_learning_rate(opt))
        logging.info("step %d/%d %s", current, config.train_steps, " ".join(f"{k}={v:.4g}" for k, v in logs.items()))
        evaluated = config.eval_steps and (current % config.eval_steps == 0 or current == config.train_steps)
        if evaluated and current > after:
            scores = evaluate_split()
            eval_history.append({"step": current, **scores})
            if eval_writer is not None:
                with eval_writer.as_default(step=current):
                    for name, value in scores.items():
                        tf.summary.scalar(name, value)
            logging.info(
                "step %d %s: %s", current, config.eval_split, " ".join(f"{k}={v:.4g}" for k, v in scores.items())
            )
            if chief:
                run_files.write_eval_history(config.model_dir, eval_history)
            if best_manager is not None and best_evaluation(eval_history, metric, after)["step"] == current:
                pending_best = (current, model.get_weights())
        stopping = patience_exhausted(eval_history, metric, config.early_stopping_patience, after)
        if current % config.checkpoint_steps == 0 or current == config.train_steps or stopping:
            save_checkpoint(current)
    writer.flush()
    if eval_writer is not None:
        eval_writer.flush()
    best = best_evaluation(eval_history, metric, after)
    if best_manager is not None and best is not None:
        if best_manager.latest_checkpoint != os.path.join(best_manager.directory, f"ckpt-{best['step']}"):
            raise CheckpointError(
                f"{best_manager.directory} holds {best_manager.latest_checkpoint}, not the best evaluation's "
                f"weights (step {best['step']}): the run was interrupted while saving; start it in a new --model_dir"
            )
        best_checkpoint.restore(best_manager.latest_checkpoint).assert_existing_objects_matched()
        logging.info(
            "restored the best %s weights: step %d, %s=%.4g", config.eval_split, best["step"], metric, best[metric]
        )

    # === Outputs ===
    if not chief:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    result = {"step": int(step.numpy()), "method": method.name, **logs}
    if eval_history:
        result["eval_history"] = eval_history
        result["best_step"] = best["step"] if best else None
        result["best_" + metric] = best[metric] if best else None
        result["stopped_early"] = int(step.numpy()) < config.train_steps
        result["restored_best"] = bool(best_manager is not None and best is not None)
    result["weights_checksum"] = weights_checksum(model)
    if chief:
        model.save(os.path.join(config.model_dir, run_files.MODEL_FILE))
        run_files.write_json(os.path.join(config.model_dir, run_files.RESULT_FILE), result)
    return result
