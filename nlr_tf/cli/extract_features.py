r"""nlr-extract-features: caches a frozen backbone's pooled features.

Examples:
  nlr-extract-features --model_dir=runs/noisy --dataset=out/digits_mosaic_ml \
      --output_dir=runs/noisy/features_10
  nlr-extract-features --backbone=inception_v3 --backbone_weights=imagenet \
      --dataset=data/openimages_v1 --output_dir=cache/inception_imagenet \
      --cache_dtype=float16
  # All local GPUs, 256 images per step split over them:
  nlr-extract-features --model_dir=runs/noisy --dataset=gs://bucket/openimages_v1 \
      --output_dir=gs://bucket/cache/noisy --strategy=mirrored --batch_size=256
  # On every worker of a cluster (TF_CONFIG names the workers and this one's index):
  nlr-extract-features --model_dir=gs://bucket/runs/noisy --dataset=gs://bucket/openimages_v1 \
      --output_dir=gs://bucket/cache/noisy --strategy=multi_worker_mirrored --batch_size=256

The backbone comes from a trained model dir (its last checkpoint) or from
--backbone and --backbone_weights. --backbone_weights=imagenet reads the
keras.applications file from the Keras cache ($KERAS_HOME/models/, else
~/.keras/models/) and downloads it there when absent, as keras.applications
does; without network, copy the file there or pass its path. The cache is a dataset folder whose
records hold features instead of images; `nlr-train --train_backbone=false
--feature_cache=DIR` trains heads on it, many times faster than through the
backbone. --cache_dtype=float16 stores the features in half the space
(rounded to float16; a feature beyond float16's range is an error); train
on such a cache with `nlr-train --cache_dtype=float16`.

--strategy (with --devices, --tpu, as nlr-train's) runs the backbone on
every replica; --batch_size then counts the images of one step over all
replicas. Under multi_worker_mirrored every worker reads its share of each
split and writes its own shards into one temporary folder beside
--output_dir (on a filesystem every worker reaches: gs://, a shared disk);
once all are done, the chief lists every shard in dataset.json and the
cache appears. Every record is written exactly once, with the ids and
labels a one-device cache has; nlr-train reads a cache made either way.
"""

import sys

from absl import app, flags

from nlr_tf.backbones.sizes import BACKBONES
from nlr_tf.models.methods import PRECISIONS
from nlr_tf.models.options import flag_spec
from nlr_tf.training.config import STRATEGIES, flag_fields

_DATASET = flags.DEFINE_string("dataset", None, "Dataset folder of images.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Feature cache folder to create.")
_MODEL_DIR = flags.DEFINE_string("model_dir", "", "A trained model dir (or checkpoint prefix) whose backbone to use.")
_BACKBONE = flags.DEFINE_enum("backbone", None, list(BACKBONES), "Backbone, without --model_dir.")
_BACKBONE_WEIGHTS = flags.DEFINE_string(
    "backbone_weights",
    "imagenet",
    "imagenet (from the Keras cache, downloaded there when absent) or a .h5 file, without --model_dir.",
)
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", 0, "Input side (0: the model's or the backbone's default).", lower_bound=0
)
_SPLITS = flags.DEFINE_list("splits", None, "Splits to cache (default: all).")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 64, "Images per backbone call, summed over replicas (a multiple of their number).", lower_bound=1
)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 4, "Shards per split (with several workers, rounded up to a multiple of their number).", lower_bound=1
)
_CACHE_DTYPE = flags.DEFINE_enum(
    "cache_dtype", "float32", ["float32", "float16"], "dtype the features are stored in (float16 halves the size)."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing cache.")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bar.")

_MIXED_PRECISION = flags.DEFINE_enum(
    "mixed_precision",
    "none",
    list(PRECISIONS),
    "Keras dtype policy of the backbone while extracting (mixed_bfloat16 on TPUs and recent GPUs, mixed_float16 "
    "on GPUs).",
)

# The distribution flags of nlr-train: the same names, defaults and help.
_TRAIN_FIELDS = {f.name: f for f in flag_fields()}
_STRATEGY = flags.DEFINE_enum(
    "strategy", _TRAIN_FIELDS["strategy"].default, list(STRATEGIES), flag_spec(_TRAIN_FIELDS["strategy"])["help"]
)
_TPU = flags.DEFINE_string("tpu", _TRAIN_FIELDS["tpu"].default, flag_spec(_TRAIN_FIELDS["tpu"])["help"])
_DEVICES = flags.DEFINE_list(
    "devices", list(_TRAIN_FIELDS["devices"].default), flag_spec(_TRAIN_FIELDS["devices"])["help"]
)

flags.mark_flags_as_required(["dataset", "output_dir"])


def _load_backbone(info):
    """The frozen backbone of --model_dir or of --backbone and --backbone_weights: (model, name, size, source)."""
    from nlr_tf.backbones.networks import build_backbone
    from nlr_tf.training.checkpoints import restore_parts
    from nlr_tf.training.model_dir import CheckpointError, resolve_checkpoint

    if not _MODEL_DIR.value:
        name, size = _BACKBONE.value, _IMAGE_SIZE.value
        return build_backbone(name, _BACKBONE_WEIGHTS.value, size, trainable=False), name, size, _BACKBONE_WEIGHTS.value
    prefix, run_config = resolve_checkpoint(_MODEL_DIR.value)
    if run_config is None:
        raise CheckpointError(f"{_MODEL_DIR.value}: no config.json to rebuild its backbone from")
    if run_config["num_classes"] != info.num_classes:
        raise CheckpointError(
            f"{_MODEL_DIR.value} has {run_config['num_classes']} classes but dataset {info.path!r} has "
            f"{info.num_classes}"
        )
    name, size = run_config["backbone"], _IMAGE_SIZE.value or run_config.get("image_size", 0)
    backbone = build_backbone(name, "none", size, trainable=False)
    return backbone, name, size, restore_parts({"backbone": backbone}, prefix)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _MODEL_DIR.value and _BACKBONE.value:
        raise app.UsageError("pass --model_dir or --backbone, not both")
    if not _MODEL_DIR.value and not _BACKBONE.value:
        raise app.UsageError("pass --model_dir (a trained model) or --backbone and --backbone_weights")
    from nlr_tf.data.feature_cache import extract_features
    from nlr_tf.data.output_dir import OutputDirError
    from nlr_tf.data.schema import DatasetError, load_dataset_info
    from nlr_tf.models.precision import apply_precision
    from nlr_tf.training import preemption
    from nlr_tf.training.model_dir import CheckpointError
    from nlr_tf.training.strategies import get_strategy, is_chief

    try:
        with preemption.raise_on_sigterm():  # a SIGTERM raises: the temporary output folder is removed
            strategy = get_strategy(_STRATEGY.value, _TPU.value, _DEVICES.value)
            info = load_dataset_info(_DATASET.value)
            with strategy.scope():  # the backbone's variables on every replica's device
                backbone, name, size, source = _load_backbone(info)
                apply_precision(backbone, _MIXED_PRECISION.value)
            cache = extract_features(
                backbone,
                info,
                _OUTPUT_DIR.value,
                backbone_name=name,
                backbone_source=source,
                image_size=size,
                splits=_SPLITS.value,
                batch_size=_BATCH_SIZE.value,
                num_shards=_NUM_SHARDS.value,
                overwrite=_OVERWRITE.value,
                progress=not _QUIET.value,
                dtype=_CACHE_DTYPE.value,
                strategy=strategy,
            )
    except (DatasetError, CheckpointError, OutputDirError, ValueError) as e:
        print(f"nlr-extract-features: error: {e}", file=sys.stderr)
        return 1
    except preemption.Preempted as e:
        print(preemption.message("nlr-extract-features", e), flush=True)
        return preemption.PREEMPTED_STATUS
    counts = ", ".join(f"{s}={v.num_records}" for s, v in sorted(cache.splits.items()))
    who = "" if is_chief(strategy) else f"worker {strategy.cluster_resolver.task_id}: the chief "
    print(f"{who}wrote {cache.path}: {cache.feature_dim}-d features ({cache.feature_dtype}) of {source}; {counts}")
    return 0


def run(argv=None):
    """Runs nlr-extract-features on `argv` (None: `sys.argv`); a full disk ends it in one line (`faults.run`)."""
    from nlr_tf.cli import faults

    faults.run("nlr-extract-features", main, argv)


if __name__ == "__main__":
    run()
