r"""nlr-eval: the papers' metrics of a trained model on a dataset split.

Example:
  nlr-eval --model_dir=runs/digits_ml_nr_sigmoid --dataset=out/digits_mosaic_ml_10 --split=test

Prints mAP, APall and top-1 (against verified labels; unverified entries
are left out) and writes them, with per-class AP and per-category mAP, to
--output (default MODEL_DIR/eval_SPLIT/metrics.json).
"""

import json
import os
import sys

from absl import app, flags

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A finished nlr-train run.")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset folder (or a feature cache of it).")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", "", "metrics.json path (default MODEL_DIR/eval_SPLIT/metrics.json).")

flags.mark_flags_as_required(["model_dir", "dataset"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from nlr_tf.data.schema import DatasetError, load_dataset_info
    from nlr_tf.evaluation.evaluator import EvalError, evaluate, load_trained_model

    try:
        info = load_dataset_info(_DATASET.value)
        info.split_files(_SPLIT.value)
        model, run_config = load_trained_model(_MODEL_DIR.value)
        result = evaluate(
            model,
            info,
            _SPLIT.value,
            backbone=run_config["backbone"],
            image_size=run_config.get("image_size", 0),
            batch_size=_BATCH_SIZE.value,
        )
    except (DatasetError, EvalError) as e:
        print(f"nlr-eval: error: {e}", file=sys.stderr)
        return 1
    output = _OUTPUT.value or os.path.join(_MODEL_DIR.value, f"eval_{_SPLIT.value}", "metrics.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(result, f, indent=1)
    print(
        f"{_SPLIT.value}: mAP={100 * result['mAP']:.2f} APall={100 * result['APall']:.2f} "
        f"top1={100 * result['top1']:.2f} ({result['num_images']} images, "
        f"{result['classes_without_positives']} classes without a verified positive)"
    )
    for category, value in result["per_category_mAP"].items():
        print(f"  mAP {category:<20} {'-' if value is None else f'{100 * value:.2f}'}")
    print(f"wrote {output}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
