r"""nlr-export: a trained model as a SavedModel for TF Serving.

Example:
  nlr-export --model_dir=runs/digits_ml_nr_sigmoid --export_dir=export/digits/1
  saved_model_cli show --dir export/digits/1 --all
  nlr-export --model_dir=runs/digits_ml_nr_sigmoid --export_dir=export/digits/2 --thresholds \
      --target_precision=0.9

`serving_default` takes encoded JPEG/PNG bytes (tf.string [None]) and
returns `scores`, `top_k_indices` and `top_k_names`; `serve_images` takes
float32 RGB images in [0, 255] of the model's input size.

With --thresholds, a per-class decision threshold is chosen on the verified
labels of --thresholds_split (default val) of the run's dataset: the best
F1 of each class, or with --target_precision=P the lowest threshold whose
precision is at least P. Both signatures then also return `labels` (1 where
a score is at least its class's threshold) and `label_names` (the class
name there, else ""), and EXPORT_DIR/thresholds.json lists each class's
threshold with the precision, recall and F1 it gave; a class with no
verified positive, or that never reaches P, is never predicted and listed.
"""

import math
import os
import sys

from absl import app, flags

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A finished nlr-train run.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "SavedModel folder to write (e.g. .../1 for TF Serving).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Top classes returned per image.", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing export_dir.")
_THRESHOLDS = flags.DEFINE_bool(
    "thresholds", False, "Choose per-class decision thresholds on verified labels; add `labels` outputs."
)
_TARGET_PRECISION = flags.DEFINE_float(
    "target_precision",
    None,
    "With --thresholds: each class's lowest threshold with at least this precision (default: its best F1).",
    lower_bound=0.0,
    upper_bound=1.0,
)
_DATASET = flags.DEFINE_string("dataset", "", "With --thresholds: the dataset (default: the run's own).")
_THRESHOLDS_SPLIT = flags.DEFINE_string("thresholds_split", "val", "With --thresholds: the split to choose them on.")

flags.mark_flags_as_required(["model_dir", "export_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf

    from nlr_tf.backbones.sizes import default_image_size
    from nlr_tf.data.schema import DatasetError
    from nlr_tf.evaluation.evaluator import EvalError, run_thresholds
    from nlr_tf.export.serving import THRESHOLDS_FILE, write_export
    from nlr_tf.training.model_dir import CheckpointError, load_trained_model

    def error(message):
        print(f"nlr-export: error: {message}", file=sys.stderr)
        return 1

    if _TARGET_PRECISION.value is not None and not _THRESHOLDS.value:
        return error("--target_precision chooses thresholds: pass --thresholds with it")
    if _TARGET_PRECISION.value == 0:
        return error("--target_precision must be above 0")
    if tf.io.gfile.exists(_EXPORT_DIR.value) and not _OVERWRITE.value:
        return error(f"{_EXPORT_DIR.value!r} exists (pass --overwrite to replace it)")
    try:
        model, run_config = load_trained_model(_MODEL_DIR.value)
    except CheckpointError as e:
        return error(e)
    class_names = run_config["class_names"]
    chosen = None
    if _THRESHOLDS.value:
        dataset = _DATASET.value or run_config["dataset"]
        try:
            chosen = run_thresholds(
                model,
                run_config,
                _MODEL_DIR.value,
                dataset,
                _THRESHOLDS_SPLIT.value,
                target_precision=_TARGET_PRECISION.value,
            )
        except (EvalError, DatasetError) as e:
            return error(e)
    size = run_config.get("image_size") or default_image_size(run_config["backbone"])[0]
    write_export(  # whole or not at all, replacing an old export (its thresholds too) only once complete
        model,
        _EXPORT_DIR.value,
        image_size=size,
        class_names=class_names,
        top_k=_TOP_K.value,
        thresholds=None if chosen is None else chosen.values,
        thresholds_json=None if chosen is None else chosen.as_dict(class_names, _THRESHOLDS_SPLIT.value),
        overwrite=_OVERWRITE.value,
    )
    print(f"wrote {_EXPORT_DIR.value}: serving_default (image_bytes) and serve_images ({size}x{size} RGB)")
    if chosen is not None:
        path = os.path.join(_EXPORT_DIR.value, THRESHOLDS_FILE)
        f1 = [x for x in chosen.f1 if not math.isnan(x)]
        print(
            f"thresholds ({chosen.rule} on {_THRESHOLDS_SPLIT.value}): {len(f1)} of {len(class_names)} classes "
            f"predicted, mean F1 {100 * sum(f1) / max(len(f1), 1):.2f} %; outputs labels, label_names; {path}"
        )
        for j, why in sorted(chosen.why_never.items()):
            print(f"  never predicted: {class_names[j]}: {why}")
    return 0


def run(argv=None):
    """Runs nlr-export on `argv` (None: `sys.argv`); a full disk ends it in one line (`faults.run`)."""
    from nlr_tf.cli import faults

    faults.run("nlr-export", main, argv)


if __name__ == "__main__":
    run()
