"""Checks of a training configuration against its dataset and checkpoint, before anything is built.

Every bad combination fails here with one line naming the flag, so a run
that cannot work writes nothing. The settings a run derives from its
configuration (the selection metric, whether the backbone trains, the batch
mix) are decided here too, once.
"""

import dataclasses
from typing import Optional

from nlr_tf.backbones.networks import MIN_IMAGE_SIZE, resolve_weights
from nlr_tf.backbones.sizes import DEFAULT_IMAGE_SIZE
from nlr_tf.data.mixing import mix_counts
from nlr_tf.data.schema import DatasetError, DatasetInfo, load_dataset_info
from nlr_tf.models.methods import FAMILIES, METHODS, Method, get_method
from nlr_tf.models.options import flag_spec
from nlr_tf.training.config import EVAL_METRICS, TrainConfig
from nlr_tf.training.model_dir import CheckpointError, resolve_checkpoint
from nlr_tf.training.tasks import get_task, main_phase_start


class ConfigError(ValueError):
    """A training configuration that cannot work with its dataset or checkpoint."""


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
    task = get_task(method.family)
    problem = _choice_error(config, method) or task.check(config, info)
    if problem:
        raise ConfigError(problem)
    for name, methods in _option_readers().items():
        if method.name not in methods and getattr(config, name) != _DEFAULTS[name]:
            raise ConfigError(f"--{name} applies to --method={' or '.join(methods)} only")
    if task.phases and main_phase_start(task.phases, config) >= config.train_steps:
        steps = ", ".join(f"--{p.steps_option}={getattr(config, p.steps_option)}" for p in task.phases)
        raise ConfigError(f"{steps} leaves no main training in --train_steps={config.train_steps}")
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
    if config.max_checkpoints < 2:  # a damaged last checkpoint leaves the one before it
        raise ConfigError(f"--max_checkpoints must be >= 2, got {config.max_checkpoints}")
    rates = ["learning_rate"] + [n for n in FAMILIES[method.family].option_names() if n.endswith("learning_rate")]
    for name in rates:
        if not getattr(config, name) > 0:
            raise ConfigError(f"--{name} must be > 0, got {getattr(config, name)}")
    if config.lr_decay_rate < 1 and not config.lr_decay_epochs > 0:
        raise ConfigError(f"--lr_decay_rate={config.lr_decay_rate} needs --lr_decay_epochs > 0")
    size = config.image_size or DEFAULT_IMAGE_SIZE[config.backbone]
    if size < MIN_IMAGE_SIZE[config.backbone]:
        raise ConfigError(
            f"--image_size={size}: {config.backbone} needs images of at least {MIN_IMAGE_SIZE[config.backbone]} pixels"
        )
    try:
        mix_counts(config.batch_size, mix_ratio(config, method))
        # "imagenet" absent from the Keras cache is downloaded here, before anything is written (or fails in
        # one line); building the backbone then finds it in the cache.
        resolve_weights(config.backbone, config.backbone_weights)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return info, method


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _option_readers() -> dict[str, list[str]]:
    """Each family's option -> the methods whose family declares it (the only ones that may set it)."""
    readers: dict[str, list[str]] = {}
    for method in METHODS.values():
        for name in FAMILIES[method.family].option_names():
            readers.setdefault(name, []).append(method.name)
    return readers


def _choice_error(config: TrainConfig, method: Method) -> Optional[str]:
    """A value of the method's family's options outside that family's own choices (`--serve` is one flag for
    several families, each with its choices)."""
    for field in FAMILIES[method.family].option_fields():
        choices, value = flag_spec(field)["choices"], getattr(config, field.name)
        if choices is not None and value not in choices:
            return f"--{field.name}={value}: --method={method.name} takes one of {', '.join(c for c in choices if c)}"
    return None


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


def steps_per_epoch(config: TrainConfig, method: Method, info: DatasetInfo) -> int:
    noisy, clean = mix_counts(config.batch_size, mix_ratio(config, method))
    split, per_batch = (config.noisy_split, noisy) if noisy else (config.clean_split, clean)
    return max(1, info.splits[split].num_records // per_batch)
