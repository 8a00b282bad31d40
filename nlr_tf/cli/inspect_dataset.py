r"""nlr-inspect: label statistics of a dataset folder.

Example:
  nlr-inspect /tmp/digits_ml_10
  nlr-inspect /tmp/digits_ml_10 --splits=noisy,clean --output_json=stats.json

Prints per-split record counts, the share of noisy annotations that are
false and of true labels that are missed, and per class the frequency and
annotation quality (Veit et al. 2017, Fig. 4).
"""

import sys

from absl import app, flags

from nlr_tf.data import files
from nlr_tf.data.schema import DatasetError, load_dataset_info

_SPLITS = flags.DEFINE_list("splits", None, "Splits to inspect (default: all).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the full statistics as JSON here.")
_MAX_CLASSES = flags.DEFINE_integer("max_classes", 50, "Classes listed per split in the printed table.", lower_bound=0)


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: nlr-inspect DATASET_DIR [--splits=a,b] [--output_json=F]")
    from tfrecords_tools.inspection import format_report, inspect_dataset

    try:
        info = load_dataset_info(argv[1])
        report = inspect_dataset(info, _SPLITS.value)
    except DatasetError as e:
        print(f"nlr-inspect: error: {e}", file=sys.stderr)
        return 1
    print(format_report(report, _MAX_CLASSES.value))
    if _OUTPUT_JSON.value:
        files.write_json(_OUTPUT_JSON.value, report)
    return 0


def run(argv=None):
    """Runs nlr-inspect on `argv` (None: `sys.argv`); a full disk ends it in one line (`faults.run`)."""
    from nlr_tf.cli import faults

    faults.run("nlr-inspect", main, argv)


if __name__ == "__main__":
    run()
