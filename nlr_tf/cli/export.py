r"""nlr-export: a trained model as a SavedModel for TF Serving.

Example:
  nlr-export --model_dir=runs/digits_ml_nr_sigmoid --export_dir=export/digits/1
  saved_model_cli show --dir export/digits/1 --all

`serving_default` takes encoded JPEG/PNG bytes (tf.string [None]) and
returns `scores`, `top_k_indices` and `top_k_names`; `serve_images` takes
float32 RGB images in [0, 255] of the model's input size.
"""

import os
import sys

from absl import app, flags

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A finished nlr-train run.")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "SavedModel folder to write (e.g. .../1 for TF Serving).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Top classes returned per image.", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing export_dir.")

flags.mark_flags_as_required(["model_dir", "export_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from nlr_tf.backbones.sizes import default_image_size
    from nlr_tf.export.serving import export_saved_model
    from nlr_tf.training.model_dir import CheckpointError, load_trained_model

    if os.path.exists(_EXPORT_DIR.value) and not _OVERWRITE.value:
        print(f"nlr-export: error: {_EXPORT_DIR.value!r} exists (pass --overwrite to replace it)", file=sys.stderr)
        return 1
    try:
        model, run_config = load_trained_model(_MODEL_DIR.value)
    except CheckpointError as e:
        print(f"nlr-export: error: {e}", file=sys.stderr)
        return 1
    size = run_config.get("image_size") or default_image_size(run_config["backbone"])[0]
    export_saved_model(
        model, _EXPORT_DIR.value, image_size=size, class_names=run_config["class_names"], top_k=_TOP_K.value
    )
    print(f"wrote {_EXPORT_DIR.value}: serving_default (image_bytes) and serve_images ({size}x{size} RGB)")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
