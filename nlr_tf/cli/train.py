r"""nlr-train: trains a method or baseline on a dataset folder.

Examples:
  nlr-train --flagfile=flags/digits_ml_noisy.cfg --dataset=out/digits_mosaic_ml --model_dir=runs/noisy
  nlr-train --flagfile=flags/digits_ml_nr_sigmoid.cfg --dataset=out/digits_mosaic_ml \
      --init_checkpoint=runs/noisy --model_dir=runs/nr_sigmoid --activation=sigmoid

Started again with the same command, a run resumes from the last checkpoint
in --model_dir and ends at the same step count. TensorBoard logs go under
--model_dir/train. With --train_backbone=false and --feature_cache=DIR, the
heads train on cached backbone features (written once, by this binary or by
nlr-extract-features).
"""

import sys

from absl import app, flags

from nlr_tf.models.backbones import BACKBONES
from nlr_tf.models.clean_residual_heads import ACTIVATIONS
from nlr_tf.models.methods import METHODS
from nlr_tf.training.optimizers import OPTIMIZERS
from nlr_tf.training.strategies import STRATEGIES

# === What to train, on what ===
_METHOD = flags.DEFINE_enum("method", None, list(METHODS), "Method or baseline (see README).")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset folder made by nlr-make-tfrecords.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Checkpoints, TensorBoard logs and the final model go here.")
_INIT_CHECKPOINT = flags.DEFINE_string(
    "init_checkpoint", "", "A trained `noisy` model dir (or checkpoint prefix) to start from."
)
_NOISY_SPLIT = flags.DEFINE_string("noisy_split", "noisy", "Split with noisy labels.")
_CLEAN_SPLIT = flags.DEFINE_string("clean_split", "clean", "Split with verified labels (clean_all: the upper bound).")

# === Model ===
_BACKBONE = flags.DEFINE_enum("backbone", "small_cnn", list(BACKBONES), "Backbone network.")
_BACKBONE_WEIGHTS = flags.DEFINE_string("backbone_weights", "none", "none, imagenet, or a path to a Keras .h5 file.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Input side (0: the backbone's default).", lower_bound=0)
_TRAIN_BACKBONE = flags.DEFINE_bool(
    "train_backbone", None, "Train the backbone (default: the method's, or the papers' scheme for the data)."
)
_ACTIVATION = flags.DEFINE_enum(
    "activation", "sigmoid", list(ACTIVATIONS), "noise_regularization: the nets' activation."
)
_ALPHA = flags.DEFINE_float("alpha", 0.2, "noise_regularization: weight of L_clean (0 = h alone).", lower_bound=0.0)
_HIDDEN_DIM = flags.DEFINE_integer("hidden_dim", 512, "noise_regularization: hidden width of each net.", lower_bound=1)

# === Optimization ===
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "Optimizer of every part.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Learning rate of the classifier / heads.", lower_bound=0.0)
_BACKBONE_LEARNING_RATE = flags.DEFINE_float(
    "backbone_learning_rate", 0.0, "Learning rate of a trained backbone (0: --learning_rate).", lower_bound=0.0
)
_CLEANING_LEARNING_RATE = flags.DEFINE_float(
    "cleaning_learning_rate",
    0.015,
    "label_cleaning: cleaning network rate (joint, or while pretraining).",
    lower_bound=0.0,
)
_CLEANING_JOINT_LEARNING_RATE = flags.DEFINE_float(
    "cleaning_joint_learning_rate", 0.001, "label_cleaning: cleaning network rate after pretraining.", lower_bound=0.0
)
_CLEANING_PRETRAIN_STEPS = flags.DEFINE_integer(
    "cleaning_pretrain_steps",
    0,
    "label_cleaning: steps training the cleaning net alone first (0 = joint).",
    lower_bound=0,
)
_LR_DECAY_RATE = flags.DEFINE_float(
    "lr_decay_rate", 1.0, "Learning-rate decay factor (1 = none).", lower_bound=0.0, upper_bound=1.0
)
_LR_DECAY_EPOCHS = flags.DEFINE_float("lr_decay_epochs", 2.0, "Epochs between decays.", lower_bound=0.0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch size.", lower_bound=1)
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 1000, "Total training steps.", lower_bound=1)
_MIX_RATIO = flags.DEFINE_string("mix_ratio", "", "noisy:clean examples per batch (default: the method's).")

# === Running ===
_CHECKPOINT_STEPS = flags.DEFINE_integer("checkpoint_steps", 500, "Steps between checkpoints.", lower_bound=1)
_LOG_STEPS = flags.DEFINE_integer("log_steps", 50, "Steps between TensorBoard scalars.", lower_bound=1)
_EVAL_SPLIT = flags.DEFINE_string("eval_split", "", "Split evaluated during training (e.g. val); empty: none.")
_EVAL_STEPS = flags.DEFINE_integer(
    "eval_steps",
    0,
    "Steps between evaluations on --eval_split (0: none); mAP/APall/top-1 go to MODEL_DIR/eval_SPLIT.",
    lower_bound=0,
)
_EVAL_METRIC = flags.DEFINE_enum(
    "eval_metric",
    "",
    ["", "mAP", "APall", "top1"],
    "Metric that picks the best evaluation ('': mAP, or top1 if single-label).",
)
_EARLY_STOPPING_PATIENCE = flags.DEFINE_integer(
    "early_stopping_patience",
    0,
    "Stop after this many evaluations without a better --eval_metric (0: train every step).",
    lower_bound=0,
)
_RESTORE_BEST = flags.DEFINE_bool(
    "restore_best", False, "The final model.keras holds the weights of the best evaluation, not the last step."
)
_STRATEGY = flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "tf.distribute strategy.")
_TPU = flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
_DEVICES = flags.DEFINE_list("devices", [], "Devices for --strategy=mirrored (default: all GPUs).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the input order and initialization.")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False, "Deterministic input order and ops (slower).")
_AUGMENT = flags.DEFINE_bool("augment", False, "Random crops.")
_RANDOM_FLIP = flags.DEFINE_bool("random_flip", False, "Random horizontal flips (with --augment).")
_FEATURE_CACHE = flags.DEFINE_string("feature_cache", "", "Feature cache folder (built here when absent).")

flags.mark_flags_as_required(["method", "dataset", "model_dir"])


def config_from_flags():
    from nlr_tf.training.trainer import TrainConfig

    return TrainConfig(
        method=_METHOD.value,
        dataset=_DATASET.value,
        model_dir=_MODEL_DIR.value,
        backbone=_BACKBONE.value,
        backbone_weights=_BACKBONE_WEIGHTS.value,
        image_size=_IMAGE_SIZE.value,
        train_backbone=_TRAIN_BACKBONE.value,
        init_checkpoint=_INIT_CHECKPOINT.value,
        activation=_ACTIVATION.value,
        alpha=_ALPHA.value,
        hidden_dim=_HIDDEN_DIM.value,
        optimizer=_OPTIMIZER.value,
        learning_rate=_LEARNING_RATE.value,
        backbone_learning_rate=_BACKBONE_LEARNING_RATE.value,
        cleaning_learning_rate=_CLEANING_LEARNING_RATE.value,
        cleaning_joint_learning_rate=_CLEANING_JOINT_LEARNING_RATE.value,
        cleaning_pretrain_steps=_CLEANING_PRETRAIN_STEPS.value,
        lr_decay_rate=_LR_DECAY_RATE.value,
        lr_decay_epochs=_LR_DECAY_EPOCHS.value,
        batch_size=_BATCH_SIZE.value,
        train_steps=_TRAIN_STEPS.value,
        mix_ratio=_MIX_RATIO.value,
        noisy_split=_NOISY_SPLIT.value,
        clean_split=_CLEAN_SPLIT.value,
        checkpoint_steps=_CHECKPOINT_STEPS.value,
        log_steps=_LOG_STEPS.value,
        eval_split=_EVAL_SPLIT.value,
        eval_steps=_EVAL_STEPS.value,
        eval_metric=_EVAL_METRIC.value,
        early_stopping_patience=_EARLY_STOPPING_PATIENCE.value,
        restore_best=_RESTORE_BEST.value,
        strategy=_STRATEGY.value,
        tpu=_TPU.value,
        devices=tuple(_DEVICES.value),
        seed=_SEED.value,
        deterministic=_DETERMINISTIC.value,
        augment=_AUGMENT.value,
        random_flip=_RANDOM_FLIP.value,
        feature_cache=_FEATURE_CACHE.value,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from nlr_tf.training.trainer import ConfigError, train

    try:
        result = train(config_from_flags())
    except ConfigError as e:
        print(f"nlr-train: error: {e}", file=sys.stderr)
        return 1
    losses = " ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float) and k != "weights_checksum")
    print(f"trained {result['method']} for {result['step']} steps: {losses}")
    print(f"weights checksum: {result['weights_checksum']:.10g}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
