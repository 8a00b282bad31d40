"""Setting up a training run before its first step: the strategy, the run's config, the model with one optimizer per
trained part, its initial weights and the feature cache it trains on."""

import dataclasses
import os

import tensorflow as tf
from absl import logging

from nlr_tf.data import files
from nlr_tf.data.feature_cache import FeatureCacheError, extract_features, load_feature_cache
from nlr_tf.data.mixing import mix_counts
from nlr_tf.data.schema import DatasetError, DatasetInfo
from nlr_tf.models.methods import Method, build_model
from nlr_tf.models.precision import apply_precision, wrap_optimizer
from nlr_tf.training import model_dir as run_files
from nlr_tf.training import optimizers as optim
from nlr_tf.training.checkpoints import restore_parts
from nlr_tf.training.checks import ConfigError, mix_ratio, steps_per_epoch
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.model_dir import CheckpointError
from nlr_tf.training.strategies import get_strategy
from nlr_tf.training.tasks import Task


def make_strategy(config: TrainConfig, method: Method):
    """The run's `tf.distribute` strategy, checked against the step it runs (XLA, the batch's split)."""
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
    return strategy


def write_run_config(
    config: TrainConfig, info: DatasetInfo, method: Method, trains_backbone: bool, chief: bool
) -> None:
    """Writes the run's config to its model dir (the chief), refusing a model dir that holds another run."""
    files.makedirs(config.model_dir)
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
    if chief:
        run_files.write_json(os.path.join(config.model_dir, run_files.CONFIG_FILE), run_config)


# === Model, optimizers, initial weights ===
def restore_init_checkpoint(model, method: Method, init: str) -> None:
    """Copies `method.restore` parts from a trained model's checkpoint; proves they matched."""
    try:
        prefix = restore_parts({name: getattr(model, name) for name in method.restore}, init)
    except CheckpointError as e:
        raise ConfigError(f"--init_checkpoint={e}") from None
    logging.info("initialized %s from %s", ", ".join(method.restore), prefix)


def part_optimizers(config: TrainConfig, method: Method, info: DatasetInfo, trains_backbone: bool, model, task: Task):
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


def build_model_and_checkpoint(
    config: TrainConfig, method: Method, info: DatasetInfo, trains_backbone: bool, task: Task, strategy
):
    """The model under the strategy's scope, one optimizer per trained part, and its training state's checkpoint."""
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
        model.set_part_optimizers(part_optimizers(config, method, info, trains_backbone, model, task))
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        checkpoint = tf.train.Checkpoint(
            model=model, step=step, **{f"{p}_optimizer": o for p, o in model.part_optimizers.items()}
        )
    return model, step, checkpoint


def open_feature_cache(config: TrainConfig, info: DatasetInfo, method: Method, model, strategy) -> DatasetInfo:
    """Opens the run's feature cache, building it first from the model's backbone if absent."""
    # The frozen backbone's weights: the init checkpoint, or the weights flag.
    source = run_files.backbone_source(dataclasses.asdict(config) | {"train_backbone": False})
    if source == "none":
        raise ConfigError("a feature cache needs a trained backbone: pass --init_checkpoint or --backbone_weights")
    splits = [
        s for s, used in ((config.noisy_split, method.uses_noisy), (config.clean_split, method.uses_clean)) if used
    ]
    path = config.feature_cache
    if not files.isfile(os.path.join(path, "dataset.json")):
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
                strategy=strategy,  # the backbone on every replica of this process (one worker: checked above)
                batch_size=64 * strategy.num_replicas_in_sync,  # 64 a replica, as on one device
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
