"""Faults in a converter's source tree, and what a user sees of them.

Without `--skip_bad` a bad row stops the run with one line naming its file
and row, and no dataset appears; with it, the row is skipped and listed in
dataset.json.
"""

import os

import pytest

from nlr_tf.data.schema import DatasetInfo, load_dataset_info
from tfrecords_tools.records import Conversion
from tfrecords_tools.writer import BadInputError, write_dataset

ERROR_PREFIX = "nlr-make-tfrecords: error: "


def cut_in_half(path) -> None:
    """Truncates the file `path` to half its size, as an interrupted copy leaves it."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def nothing_written(out) -> bool:
    """Whether neither the dataset folder `out` nor a temporary folder of it is on disk."""
    name = os.path.basename(str(out))
    return not any(entry == name or entry.startswith(f".{name}.") for entry in os.listdir(os.path.dirname(str(out))))


def fails_in_one_line(conversion: Conversion, out) -> str:
    """Writes `conversion` to `out` without `skip_bad`; returns the error, checked to be one line leaving nothing."""
    with pytest.raises(BadInputError) as raised:
        write_dataset(conversion, str(out), progress=False)
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message
    assert nothing_written(out)
    return message


def skips(conversion: Conversion, out) -> DatasetInfo:
    """Writes `conversion` to `out` with `skip_bad`; returns the dataset as dataset.json describes it."""
    info = write_dataset(conversion, str(out), skip_bad=True, progress=False)
    read_back = load_dataset_info(str(out))
    assert read_back.skipped == info.skipped
    return read_back


def skipped_rows(info: DatasetInfo) -> list[tuple[str, str]]:
    """The (origin, reason) of every skipped row, in order; checked against the count."""
    rows = [(row["origin"], row["reason"]) for row in info.skipped["rows"]]
    assert info.skipped["count"] == len(rows)
    return rows


def cli_error_line(proc) -> str:
    """The one error line of a failed nlr-make-tfrecords run (its last line on stderr, no traceback)."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0][len(ERROR_PREFIX) :]
