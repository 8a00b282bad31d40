r"""nlr-eval: the papers' metrics and reports of a trained model on a dataset split.

Example:
  nlr-eval --model_dir=runs/digits_ml_nr_sigmoid --dataset=out/digits_mosaic_ml --split=test \
      --baseline_model_dir=runs/digits_ml_noisy

Prints mAP, APall and top-1 (against verified labels; unverified entries
are left out) and writes them, with per-class AP and per-category mAP, to
--output (default MODEL_DIR/eval_SPLIT/metrics.json). Beside it:
pr_curves.png, examples.png (top-5 predictions of --num_examples test
images), TensorBoard events (eval scalars, PR curves, the examples image),
and with --baseline_model_dir the AP gain over that baseline by class
frequency and by annotation quality (Veit et al. 2017, Fig. 5):
gain_by_frequency.png, gain_by_quality.png and tables in metrics.json.
"""

import os
import sys

from absl import app, flags

from nlr_tf.models.methods import PRECISIONS

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A finished nlr-train run.")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset folder (or a feature cache of it).")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step.", lower_bound=1)
_OUTPUT = flags.DEFINE_string(
    "output", "", "metrics.json path (default MODEL_DIR/eval_SPLIT/metrics.json); PNGs and events beside it."
)
_BASELINE_MODEL_DIR = flags.DEFINE_string(
    "baseline_model_dir",
    "",
    "A finished run to compare with (e.g. the noisy model): its metrics, and the per-class AP gain over it in 10 "
    "groups of classes by class frequency and by annotation quality.",
)
_NUM_EXAMPLES = flags.DEFINE_integer(
    "num_examples", 16, "Test images shown in examples.png with their top-5 predictions (0: none).", lower_bound=0
)

_MIXED_PRECISION = flags.DEFINE_enum(
    "mixed_precision",
    "none",
    list(PRECISIONS),
    "Keras dtype policy of the backbone while predicting (scores and metrics stay float32).",
)
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "Compile the prediction step with XLA.")

flags.mark_flags_as_required(["model_dir", "dataset"])


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from nlr_tf.data.schema import DatasetError
    from nlr_tf.evaluation import gains
    from nlr_tf.evaluation.evaluator import EvalConfig, EvalError, run_evaluation
    from nlr_tf.training.model_dir import CheckpointError

    config = EvalConfig(
        model_dir=_MODEL_DIR.value,
        dataset=_DATASET.value,
        split=_SPLIT.value,
        batch_size=_BATCH_SIZE.value,
        output=_OUTPUT.value,
        baseline_model_dir=_BASELINE_MODEL_DIR.value,
        num_examples=_NUM_EXAMPLES.value,
        mixed_precision=_MIXED_PRECISION.value,
        jit_compile=_JIT_COMPILE.value,
    )
    try:
        out = run_evaluation(config)
    except (CheckpointError, DatasetError, EvalError) as e:
        print(f"nlr-eval: error: {e}", file=sys.stderr)
        return 1
    result = out.result
    print(
        f"{config.split}: mAP={_pct(result['mAP'])} APall={_pct(result['APall'])} "
        f"top1={_pct(result['top1'])} ({result['num_images']} images, "
        f"{result['classes_without_positives']} classes without a verified positive)"
    )
    for category, value in result["per_category_mAP"].items():
        print(f"  mAP {category:<20} {_pct(value)}")
    if "baseline" in result:
        base = result["baseline"]
        print(
            f"baseline {base['model_dir']}: mAP={_pct(base['mAP'])} APall={_pct(base['APall'])} "
            f"top1={_pct(base['top1'])}"
        )
        frequency, quality = result["gain_by_frequency"], result["gain_by_quality"]
        title = f"AP gain by class frequency (noisy annotations per class in split {frequency['split']!r}), rare first:"
        print(gains.format_gain_table(frequency, title))
        title = (
            f"AP gain by annotation quality (correct share of the {quality.get('judged_annotations', 0)} noisy "
            f"annotations judged in split {quality['split']!r}), noisiest first:"
        )
        print(gains.format_gain_table(quality, title, percent_range=True))
    for note in out.notes:
        print(note)
    print(f"wrote {out.output}, {', '.join(os.path.basename(f) for f in out.files)} and TensorBoard events beside it")
    return 0


def run(argv=None):
    """Runs nlr-eval on `argv` (None: `sys.argv`); a full disk ends it in one line (`faults.run`)."""
    from nlr_tf.cli import faults

    faults.run("nlr-eval", main, argv)


if __name__ == "__main__":
    run()
