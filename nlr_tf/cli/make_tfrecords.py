r"""nlr-make-tfrecords: converts a source dataset to the nlr_tf TFRecord schema.

Examples:
  nlr-make-tfrecords --source=digits_mosaic --variant=multi_label \
      --clean_fraction=0.1 --output_dir=/tmp/digits_ml_10
  nlr-make-tfrecords --source=manifest --input=rows.csv --classes=classes.txt \
      --image_root=images/ --output_dir=/tmp/mydata --skip_bad

A bad input row (missing or corrupt image, unknown class, malformed row)
stops the run with one line naming the file and row; with --skip_bad it is
skipped, counted and listed in dataset.json. The output folder appears only
once the whole dataset is written.
"""

import sys

from absl import app, flags, logging

from tfrecords_tools.records import ConversionError

SOURCES = ("manifest", "openimages", "coco", "clothing1m", "tfds", "digits_mosaic")

# === Common ===
_SOURCE = flags.DEFINE_enum("source", None, SOURCES, "Source format to convert.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset folder to create.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 8, "Shards per split (fewer for small splits).", lower_bound=1)
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Skip and count bad rows instead of failing on the first.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Image reading threads (default: CPU count).", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output folder once the new one is complete.")
_MAX_IMAGE_SIDE = flags.DEFINE_integer(
    "max_image_side", 0, "Downscale images whose longer side exceeds this (0 keeps them).", lower_bound=0
)
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bar.")
_IMAGE_ROOT = flags.DEFINE_string("image_root", None, "Folder that image paths in the source are relative to.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for every random choice a converter makes.")
_CLEAN_FRACTION = flags.DEFINE_float(
    "clean_fraction", 0.1, "Share of training images given verified labels (digits_mosaic, coco).",
    lower_bound=0.0, upper_bound=1.0,
)

# === manifest ===
_INPUT = flags.DEFINE_string("input", None, "manifest: CSV or JSONL file of rows.")
_CLASSES = flags.DEFINE_string("classes", None, "manifest: classes file, one `name` or `name,category` per line.")
_DEFAULT_SPLIT = flags.DEFINE_string("default_split", "noisy", "manifest: split of rows without a `split` column.")
_MULTI_LABEL = flags.DEFINE_bool(
    "multi_label", True, "manifest: false for single-label data (a verified class makes the others verified absent)."
)

# === digits_mosaic ===
_VARIANT = flags.DEFINE_enum("variant", "multi_label", ["multi_label", "single_label"], "digits_mosaic: variant.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", None, "digits_mosaic: training images (default per variant).", lower_bound=10)
_NUM_VAL = flags.DEFINE_integer("num_val", None, "digits_mosaic: validation images.", lower_bound=10)
_NUM_TEST = flags.DEFINE_integer("num_test", None, "digits_mosaic: test images.", lower_bound=10)

flags.mark_flags_as_required(["source", "output_dir"])


# === Source adapters: flags -> converter call ===
def _require(**named):
    missing = [f"--{k}" for k, v in named.items() if v in (None, "")]
    if missing:
        raise ConversionError(f"--source={_SOURCE.value} needs {', '.join(missing)}")


def _manifest():
    from tfrecords_tools import manifest

    _require(input=_INPUT.value, classes=_CLASSES.value)
    return manifest.convert(
        _INPUT.value,
        _CLASSES.value,
        image_root=_IMAGE_ROOT.value or "",
        default_split=_DEFAULT_SPLIT.value,
        multi_label=_MULTI_LABEL.value,
    )


def _digits_mosaic():
    from tfrecords_tools import digits_mosaic

    return digits_mosaic.convert(
        variant=_VARIANT.value,
        clean_fraction=_CLEAN_FRACTION.value,
        seed=_SEED.value,
        num_train=_NUM_TRAIN.value,
        num_val=_NUM_VAL.value,
        num_test=_NUM_TEST.value,
    )


ADAPTERS = {
    "manifest": _manifest,
    "digits_mosaic": _digits_mosaic,
}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from tfrecords_tools.writer import BadInputError, write_dataset

    try:
        conversion = ADAPTERS[_SOURCE.value]()
        info = write_dataset(
            conversion,
            _OUTPUT_DIR.value,
            num_shards=_NUM_SHARDS.value,
            skip_bad=_SKIP_BAD.value,
            num_workers=_NUM_WORKERS.value,
            overwrite=_OVERWRITE.value,
            max_image_side=_MAX_IMAGE_SIDE.value,
            arguments={f.name: f.value for f in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__])},
            progress=not _QUIET.value,
        )
    except (BadInputError, ConversionError) as e:
        print(f"nlr-make-tfrecords: error: {e}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{name}={s.num_records}" for name, s in sorted(info.splits.items()))
    print(f"wrote {info.path}: {info.num_classes} classes, {counts}; {info.skipped['count']} bad rows skipped")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
