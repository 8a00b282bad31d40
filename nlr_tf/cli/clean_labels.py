r"""nlr-clean-labels: cleaned labels and a ranked list of suspected label errors.

Examples:
  nlr-clean-labels --model_dir=runs/digits_ml_lc_joint --dataset=out/digits_mosaic_ml \
      --output_dir=out/digits_mosaic_ml_cleaned
  nlr-clean-labels --model_dir=runs/digits_ml_noisy --dataset=out/digits_mosaic_ml \
      --output_dir=out/digits_ml_noisy_suspects --max_suspects=1000
  nlr-clean-labels --model_dir=runs/digits_ml_noisy --dataset=out/digits_mosaic_ml \
      --output_dir=out/digits_ml_noisy_cleanlab --finder=cleanlab

Writes into --output_dir (which appears only when complete):
suspected_errors.csv, the split's noisy labels ranked by how unlikely the
model finds them (any method); for a label_cleaning model (Veit et al.
2017) also the cleaned dataset (--split's label/noisy replaced by the
thresholded cleaned labels, raw ones under label/cleaned_scores, other
splits copied: a dataset for nlr-train) and cleaned_labels.csv; and
cleaning_report.json. Where every image has label/true, prints the
precision of the suspects and how much cleaning reduces false and missed
annotations. --dataset may be a feature cache of the dataset (faster: no
backbone pass); the records are then copied from the cache's source
dataset.
"""

import sys

from absl import app, flags

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A finished nlr-train run.")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset folder (or a feature cache of it).")
_SPLIT = flags.DEFINE_string("split", "noisy", "Split whose labels to clean.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder to create: CSVs, report and the cleaned dataset.")
_THRESHOLD = flags.DEFINE_float(
    "threshold", 0.5, "A cleaned label is a class whose cleaned score is above this.", lower_bound=0.0, upper_bound=1.0
)
_MAX_SUSPECTS = flags.DEFINE_integer(
    "max_suspects", 10000, "Rows of suspected_errors.csv (0: every entry).", lower_bound=0
)
_PRECISION_DEPTHS = flags.DEFINE_list(
    "precision_depths", ["100", "500", "1000"], "Depths of the reported suspect precision (K is always added)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per step.", lower_bound=1)
_COPY_OTHER_SPLITS = flags.DEFINE_bool(
    "copy_other_splits", True, "Copy the other splits into the cleaned dataset (nlr-train needs the clean split)."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir.")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bar.")
_FINDER = flags.DEFINE_enum(
    "finder",
    "self_confidence",
    ["self_confidence", "cleanlab"],
    "How suspects are ranked: self_confidence (how unlikely the model finds each noisy entry), or cleanlab "
    "(confident learning's flagged entries first; the self-confidence ranking's precision is reported beside it).",
)

flags.mark_flags_as_required(["model_dir", "dataset", "output_dir"])


@flags.validator("precision_depths", message="--precision_depths must be positive integers, e.g. 100,500,1000")
def _check_depths(values):
    return all(v.strip().isdigit() and int(v) > 0 for v in values or [])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from nlr_tf.data.output_dir import OutputDirError
    from nlr_tf.data.schema import DatasetError, load_dataset_info

    try:
        # A missing dataset or split fails here, before TensorFlow loads.
        load_dataset_info(_DATASET.value).split_files(_SPLIT.value)
    except DatasetError as e:
        print(f"nlr-clean-labels: error: {e}", file=sys.stderr)
        return 1
    from nlr_tf.evaluation.cleaned_output import CleaningError, format_report
    from nlr_tf.evaluation.cleaning import clean_labels
    from nlr_tf.evaluation.evaluator import EvalError
    from nlr_tf.training.model_dir import CheckpointError

    try:
        report = clean_labels(
            _MODEL_DIR.value,
            _DATASET.value,
            _OUTPUT_DIR.value,
            split=_SPLIT.value,
            threshold=_THRESHOLD.value,
            max_suspects=_MAX_SUSPECTS.value,
            precision_depths=[int(v) for v in _PRECISION_DEPTHS.value],
            batch_size=_BATCH_SIZE.value,
            copy_other_splits=_COPY_OTHER_SPLITS.value,
            overwrite=_OVERWRITE.value,
            progress=not _QUIET.value,
            finder=_FINDER.value,
        )
    except (CheckpointError, CleaningError, DatasetError, EvalError, OutputDirError) as e:
        print(f"nlr-clean-labels: error: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0


def run(argv=None):
    """Runs nlr-clean-labels on `argv` (None: `sys.argv`); a full disk ends it in one line (`faults.run`)."""
    from nlr_tf.cli import faults

    faults.run("nlr-clean-labels", main, argv)


if __name__ == "__main__":
    run()
