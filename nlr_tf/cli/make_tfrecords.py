r"""nlr-make-tfrecords: converts a source dataset to the nlr_tf TFRecord schema.

Examples:
  nlr-make-tfrecords --source=digits_mosaic --variant=multi_label \
      --clean_fraction=0.1 --output_dir=/tmp/digits_ml_10
  nlr-make-tfrecords --source=manifest --input=rows.csv --classes=classes.txt \
      --image_root=images/ --output_dir=/tmp/mydata --skip_bad
  nlr-make-tfrecords --source=manifest ... --runner=DirectRunner \
      --beam_options="--direct_num_workers=4 --direct_running_mode=multi_processing"

A bad input row (missing or corrupt image, unknown class, malformed row)
stops the run with one line naming the file and row; with --skip_bad it is
skipped, counted and listed in dataset.json. The output folder appears only
once the whole dataset is written. With --runner the conversion runs as an
Apache Beam pipeline (`tfrecords_tools.beam_writer`) writing the same
examples.

A SIGTERM (a preemption notice) stops the conversion: the image reading
threads (or the Beam pipeline and its worker processes) are stopped, the
temporary output folder removed, no dataset.json written; it prints one
line and exits with status 75 (`preemption.PREEMPTED_STATUS`). The same
command converts again from the start.
"""

import shlex
import sys

from absl import app, flags

from nlr_tf.data.output_dir import OutputDirError
from tfrecords_tools.records import ConversionError

SOURCES = ("manifest", "openimages", "coco", "clothing1m", "tfds", "digits_mosaic", "glyphs")

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
_REDUCED_DECODE = flags.DEFINE_bool(
    "reduced_jpeg_decode",
    True,
    "With --max_image_side: decode a JPEG at 1/2, 1/4 or 1/8 scale (still at least the output size) before the exact "
    "resize: 1.3-1.9x faster on 1024-px JPEGs to 512-299 px, a mean 0.2-1.7 of 255 levels apart "
    "(docs/performance.md).",
)
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bar.")
_RUNNER = flags.DEFINE_enum(
    "runner",
    None,
    ["DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner"],
    "Convert as an Apache Beam pipeline on this runner (pip install 'nlr_tf[beam]'); --num_workers is then unused. "
    "Default: threads on this machine.",
)
_BEAM_OPTIONS = flags.DEFINE_string(
    "beam_options",
    "",
    "With --runner: Beam's own pipeline options in one string, split as a shell splits it: for example "
    "--direct_num_workers=2 --direct_running_mode=multi_processing, or Dataflow's --project, --region, "
    "--temp_location and --setup_file.",
)
_IMAGE_ROOT = flags.DEFINE_string("image_root", None, "Folder that image paths in the source are relative to.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for every random choice a converter makes.")
_CLEAN_FRACTION = flags.DEFINE_float(
    "clean_fraction",
    0.1,
    "Share of training images given verified labels (digits_mosaic, coco).",
    lower_bound=0.0,
    upper_bound=1.0,
)

# === manifest ===
_INPUT = flags.DEFINE_string("input", None, "manifest: CSV or JSONL file of rows.")
_CLASSES = flags.DEFINE_string("classes", None, "manifest: classes file, one `name` or `name,category` per line.")
_DEFAULT_SPLIT = flags.DEFINE_string("default_split", "noisy", "manifest: split of rows without a `split` column.")
_EXTRA_SPLITS = flags.DEFINE_list(
    "extra_splits", [], "manifest: split names allowed besides noisy, clean, val and test (others are bad rows)."
)
_ENCODING = flags.DEFINE_string(
    "encoding",
    "utf-8-sig",
    "manifest, coco, clothing1m: text encoding of the input text files (e.g. latin-1); UTF-8 by default.",
)
_MULTI_LABEL = flags.DEFINE_bool(
    "multi_label", True, "manifest: false for single-label data (a verified class makes the others verified absent)."
)

# === digits_mosaic ===
_VARIANT = flags.DEFINE_enum("variant", "multi_label", ["multi_label", "single_label"], "digits_mosaic: variant.")
_NUM_TRAIN = flags.DEFINE_integer(
    "num_train", None, "digits_mosaic, glyphs: training images (default per variant / source).", lower_bound=10
)
_NUM_VAL = flags.DEFINE_integer("num_val", None, "digits_mosaic, glyphs: validation images.", lower_bound=10)
_NUM_TEST = flags.DEFINE_integer("num_test", None, "digits_mosaic, glyphs: test images.", lower_bound=10)
_NESTED_CLEAN_FRACTIONS = flags.DEFINE_list(
    "nested_clean_fractions",
    [],
    "digits_mosaic: extra nested clean splits, e.g. 0.05,0.1,0.2 writes clean_05, clean_10, clean_20 "
    "(train with --clean_split=clean_05).",
)
_ANNOTATOR = flags.DEFINE_string(
    "annotator",
    None,
    "digits_mosaic, multi_label: an nlr-train run dir whose classifier compiles the noisy labels from each whole "
    "mosaic (its top --annotator_top_k classes named as digits), as Hu et al. compiled COCO with an ImageNet "
    "model: the transfer benchmark. Default: the weak per-digit annotator of the scratch benchmark.",
)
_ANNOTATOR_TOP_K = flags.DEFINE_integer(
    "annotator_top_k", 0, "digits_mosaic: predictions of --annotator kept per mosaic (0: 4).", lower_bound=0
)

# === glyphs ===
_GLYPH_SIZES = flags.DEFINE_list(
    "glyph_sizes",
    None,
    "glyphs: smallest,largest side in px of the character in the 32-px image (default 12,28: the target's "
    "mosaic cells and single digits).",
)
_HELD_OUT_FONTS = flags.DEFINE_list(
    "held_out_fonts",
    None,
    "glyphs: font file stems rendered only in `test`, e.g. DejaVuSerif-Bold,STIXGeneralItalic,cmtt10 "
    "(default: one DejaVu, one STIX and one Computer Modern face, chosen from --seed).",
)

# === openimages ===
_OPENIMAGES_DIR = flags.DEFINE_string(
    "openimages_dir",
    None,
    "openimages: folder of the label files: v1's images_2016_08/, machine_ann_2016_08/, human_ann_2016_08/ and "
    "dict.csv, or V4-V7's *-annotations-{human,machine}-imagelabels.csv and class descriptions.",
)
_OPENIMAGES_VERSION = flags.DEFINE_enum(
    "openimages_version", "auto", ["auto", "v1", "v4+"], "openimages: the release's layout (auto: from the files)."
)
_OPENIMAGES_CLEAN_FROM = flags.DEFINE_enum(
    "openimages_clean_from",
    "validation",
    ["validation", "train"],
    "openimages V4+: the clean set from validation's human-verified labels (as Veit) or from train's.",
)
_OPENIMAGES_PRESENT_ONLY = flags.DEFINE_bool(
    "openimages_present_only",
    False,
    "openimages V4+: leave out images absent from --image_root, counted per split with the labels they take.",
)
_OPENIMAGES_MIN_CONFIDENCE = flags.DEFINE_float(
    "openimages_min_confidence",
    0.5,
    "openimages: machine labels below this confidence are dropped.",
    lower_bound=0.0,
    upper_bound=1.0,
)
_OPENIMAGES_CLEAN_SHARE = flags.DEFINE_float(
    "openimages_clean_share",
    0.25,
    "openimages: share of the validation set in `clean` (Veit et al.: a quarter).",
    lower_bound=0.0,
    upper_bound=1.0,
)
_OPENIMAGES_VAL_SHARE = flags.DEFINE_float(
    "openimages_val_share",
    0.5,
    "openimages: share of the other validation images in `val`; the rest go to `test`.",
    lower_bound=0.0,
    upper_bound=1.0,
)
_OPENIMAGES_CLASSES = flags.DEFINE_string(
    "openimages_classes",
    None,
    "openimages: class mids, one per line (default: classes.txt or labelmap.txt in --openimages_dir, else dict.csv).",
)
_OPENIMAGES_CATEGORIES = flags.DEFINE_string("openimages_categories", None, "openimages: CSV of `mid,category` rows.")

# === coco ===
_COCO_INSTANCES_TRAIN = flags.DEFINE_string("coco_instances_train", None, "coco: instances_train2014.json.")
_COCO_INSTANCES_VAL = flags.DEFINE_string("coco_instances_val", None, "coco: instances_val2014.json.")
_COCO_PREDICTIONS = flags.DEFINE_string(
    "coco_predictions",
    None,
    "coco: annotator predictions, CSV `image_id,label,score` or JSONL {image_id, predictions: [[label, score]]}.",
)
_COCO_CLASS_MAP = flags.DEFINE_string(
    "coco_class_map", None, "coco: CSV `coco_category_name,target_class` (default: the 80 COCO categories)."
)
_COCO_ANNOTATOR_MAP = flags.DEFINE_string(
    "coco_annotator_map", None, "coco: CSV `annotator_label,target_class` (default: labels are class names)."
)
_COCO_TOP_K = flags.DEFINE_integer("coco_top_k", 8, "coco: annotator predictions kept per image.", lower_bound=1)

# === clothing1m ===
_CLOTHING1M_DIR = flags.DEFINE_string(
    "clothing1m_dir", None, "clothing1m: folder with category_names_eng.txt, *_label_kv.txt and *_key_list.txt."
)

# === tfds ===
_TFDS_NAME = flags.DEFINE_string("tfds_name", None, "tfds: dataset name, e.g. cifar10 or voc/2007.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "tfds: data folder of the prepared dataset.")
_TFDS_SPLIT_MAP = flags.DEFINE_string(
    "tfds_split_map", None, "tfds: output=tfds split pairs, e.g. noisy=train[:90%],clean=train[90%:],test=test."
)
_TFDS_IMAGE_KEY = flags.DEFINE_string("tfds_image_key", "image", "tfds: the Image feature.")
_TFDS_LABEL_KEY = flags.DEFINE_string(
    "tfds_label_key", "label", "tfds: the ClassLabel (or Sequence of ClassLabel) feature of clean labels."
)
_TFDS_NOISY_LABEL_KEY = flags.DEFINE_string(
    "tfds_noisy_label_key", None, "tfds: optional feature of noisy labels (a label, or a tensor of annotators' labels)."
)
_TFDS_VERIFIED_NEG_KEY = flags.DEFINE_string(
    "tfds_verified_neg_key", None, "tfds: optional feature of classes verified absent, e.g. wrong_multi_labels."
)
_TFDS_CLEAN_FLAG_KEY = flags.DEFINE_string(
    "tfds_clean_flag_key",
    None,
    "tfds: optional boolean feature, e.g. is_clean: flagged images of the noisy split form the clean split.",
)
_TFDS_DOWNLOAD = flags.DEFINE_bool("tfds_download", False, "tfds: download and prepare the dataset if needed.")
_TFDS_MANUAL_DIR = flags.DEFINE_string(
    "tfds_manual_dir", None, "tfds: folder of a manual download (CIFAR-N, ImageNet): the dataset is prepared from it."
)

flags.mark_flags_as_required(["source", "output_dir"])


@flags.multi_flags_validator(["runner", "beam_options"], message="--beam_options needs --runner")
def _beam_options_need_a_runner(values) -> bool:
    return not values["beam_options"] or values["runner"] is not None


@flags.validator("beam_options")
def _beam_options_split(value) -> bool:
    try:
        shlex.split(value or "")
    except ValueError as e:
        raise flags.ValidationError(f"--beam_options cannot be split into options: {e} in {value!r}") from None
    return True


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
        encoding=_ENCODING.value,
        extra_splits=tuple(_EXTRA_SPLITS.value),
        multi_label=_MULTI_LABEL.value,
    )


def _openimages():
    from tfrecords_tools import openimages, openimages_v4

    _require(openimages_dir=_OPENIMAGES_DIR.value)
    version = _OPENIMAGES_VERSION.value
    if version == "auto":
        version = openimages_v4.detect(_OPENIMAGES_DIR.value)
        if version is None:
            raise ConversionError(
                f"{_OPENIMAGES_DIR.value!r} holds neither Open Images v1 (images_2016_08/) nor V4+ label files "
                "(*-annotations-human-imagelabels.csv)"
            )
    common = dict(
        image_root=_IMAGE_ROOT.value,
        min_confidence=_OPENIMAGES_MIN_CONFIDENCE.value,
        clean_share=_OPENIMAGES_CLEAN_SHARE.value,
        classes_path=_OPENIMAGES_CLASSES.value,
        categories_path=_OPENIMAGES_CATEGORIES.value,
        seed=_SEED.value,
    )
    if version == "v4+":
        return openimages_v4.convert(
            _OPENIMAGES_DIR.value,
            clean_from=_OPENIMAGES_CLEAN_FROM.value,
            present_only=_OPENIMAGES_PRESENT_ONLY.value,
            **common,
        )
    return openimages.convert(_OPENIMAGES_DIR.value, val_share=_OPENIMAGES_VAL_SHARE.value, **common)


def _coco():
    from tfrecords_tools import coco

    _require(
        coco_instances_train=_COCO_INSTANCES_TRAIN.value,
        coco_instances_val=_COCO_INSTANCES_VAL.value,
        coco_predictions=_COCO_PREDICTIONS.value,
    )
    return coco.convert(
        _COCO_INSTANCES_TRAIN.value,
        _COCO_INSTANCES_VAL.value,
        _COCO_PREDICTIONS.value,
        image_root=_IMAGE_ROOT.value,
        class_map=_COCO_CLASS_MAP.value,
        annotator_map=_COCO_ANNOTATOR_MAP.value,
        top_k=_COCO_TOP_K.value,
        clean_fraction=_CLEAN_FRACTION.value,
        seed=_SEED.value,
        encoding=_ENCODING.value,
    )


def _clothing1m():
    from tfrecords_tools import clothing1m

    _require(clothing1m_dir=_CLOTHING1M_DIR.value)
    return clothing1m.convert(_CLOTHING1M_DIR.value, image_root=_IMAGE_ROOT.value, encoding=_ENCODING.value)


def _tfds():
    from tfrecords_tools import tfds_source

    _require(tfds_name=_TFDS_NAME.value, tfds_split_map=_TFDS_SPLIT_MAP.value)
    return tfds_source.convert(
        _TFDS_NAME.value,
        _TFDS_SPLIT_MAP.value,
        data_dir=_TFDS_DATA_DIR.value,
        image_key=_TFDS_IMAGE_KEY.value,
        label_key=_TFDS_LABEL_KEY.value,
        noisy_label_key=_TFDS_NOISY_LABEL_KEY.value,
        download=_TFDS_DOWNLOAD.value,
        manual_dir=_TFDS_MANUAL_DIR.value,
        verified_neg_key=_TFDS_VERIFIED_NEG_KEY.value,
        clean_flag_key=_TFDS_CLEAN_FLAG_KEY.value,
    )


def _digits_mosaic():
    from tfrecords_tools import digits_mosaic

    annotator = None
    if _ANNOTATOR.value:
        from nlr_tf.evaluation.annotator import RunAnnotator
        from nlr_tf.training.model_dir import CheckpointError

        try:
            annotator = RunAnnotator(_ANNOTATOR.value)
        except (CheckpointError, ValueError) as e:
            raise ConversionError(f"--annotator: {e}") from None
    return digits_mosaic.convert(
        variant=_VARIANT.value,
        clean_fraction=_CLEAN_FRACTION.value,
        seed=_SEED.value,
        num_train=_NUM_TRAIN.value,
        num_val=_NUM_VAL.value,
        num_test=_NUM_TEST.value,
        nested_fractions=tuple(_float_list("nested_clean_fractions", _NESTED_CLEAN_FRACTIONS.value)),
        annotator=annotator,
        annotator_top_k=_ANNOTATOR_TOP_K.value,
    )


def _glyphs():
    from tfrecords_tools import glyphs

    return glyphs.convert(
        seed=_SEED.value,
        num_train=_NUM_TRAIN.value,
        num_val=_NUM_VAL.value,
        num_test=_NUM_TEST.value,
        glyph_sizes=tuple(_GLYPH_SIZES.value) if _GLYPH_SIZES.value else glyphs.DEFAULT_GLYPH_SIZES,
        held_out_fonts=tuple(_HELD_OUT_FONTS.value) if _HELD_OUT_FONTS.value else None,
    )


def _float_list(name: str, values: list[str]) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise ConversionError(f"--{name} takes numbers, got {','.join(values)!r}") from None


ADAPTERS = {
    "manifest": _manifest,
    "openimages": _openimages,
    "coco": _coco,
    "clothing1m": _clothing1m,
    "tfds": _tfds,
    "digits_mosaic": _digits_mosaic,
    "glyphs": _glyphs,
}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from nlr_tf.training import preemption
    from tfrecords_tools.writer import BadInputError, redact_options, write_dataset

    arguments = {f.name: f.value for f in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__])}
    arguments["beam_options"] = shlex.join(redact_options(shlex.split(_BEAM_OPTIONS.value)))
    try:
        # A SIGTERM raises where the main thread is: the threads' pending images are cancelled, the running ones
        # finished, and the temporary output folder removed as the exception passes through.
        with preemption.raise_on_sigterm():
            conversion = ADAPTERS[_SOURCE.value]()
            info = write_dataset(
                conversion,
                _OUTPUT_DIR.value,
                num_shards=_NUM_SHARDS.value,
                skip_bad=_SKIP_BAD.value,
                num_workers=_NUM_WORKERS.value,
                overwrite=_OVERWRITE.value,
                max_image_side=_MAX_IMAGE_SIDE.value,
                reduced_decode=_REDUCED_DECODE.value,
                arguments=arguments,
                progress=not _QUIET.value,
                runner=_RUNNER.value,
                beam_options=shlex.split(_BEAM_OPTIONS.value),
            )
    except (BadInputError, ConversionError, OutputDirError) as e:
        print(f"nlr-make-tfrecords: error: {e}", file=sys.stderr)
        return 1
    except preemption.Preempted:
        # No step to name; and Beam re-raises a worker's exception with its step added to the message.
        print(preemption.message("nlr-make-tfrecords", preemption.Preempted()), flush=True)
        return preemption.PREEMPTED_STATUS
    counts = ", ".join(f"{name}={s.num_records}" for name, s in sorted(info.splits.items()))
    print(f"wrote {info.path}: {info.num_classes} classes, {counts}; {info.skipped['count']} bad rows skipped")
    return 0


def run(argv=None):
    """Runs nlr-make-tfrecords on `argv` (None: `sys.argv`); a full disk ends it in one line (`faults.run`)."""
    from nlr_tf.cli import faults

    faults.run("nlr-make-tfrecords", main, argv)


if __name__ == "__main__":
    run()
