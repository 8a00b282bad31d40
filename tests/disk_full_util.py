"""A full disk under one folder, for the tests: writes there fail as on a real full disk, with no mount needed.

`disk_full(folder, free_bytes)` lets `free_bytes` more bytes be written
under `folder`, then fails the write that goes past them the way
TensorFlow's POSIX filesystem does on a full disk: what fits is written,
then `tf.errors.ResourceExhaustedError("PATH; No space left on device")`
(`IOError(path, ENOSPC)` of tsl/platform/errors.cc). With `full_from`, writes
are free until the first one to a file whose name matches that pattern: the
disk fills up just as that file is written.

Three write paths are counted:

- `FileIO.write` (`tf.io.gfile.GFile`): whatever `nlr_tf.data.files`
  writes, and TensorFlow's own Python writes (a CheckpointManager's
  `checkpoint` state, a SavedModel's `saved_model.pb`);
- `tf.io.TFRecordWriter.write`: dataset and feature cache shards (a record
  that does not fit is not written);
- `TrackableSaver.save`, the write under `tf.train.Checkpoint.write`,
  `CheckpointManager.save` and a SavedModel's variables: a checkpoint
  that does not fit leaves what a full disk leaves, a partial
  `PREFIX_temp/part-...data...tempstateN` and no `.index`, and nothing
  else (its write callbacks, such as the manager's state update, never
  run).

TensorFlow's C++ writers (TensorBoard events) are not counted.

Run as a script, `python disk_full_util.py FOLDER FREE_BYTES FULL_FROM REPORT MODULE ARGS...` runs the binary
`nlr_tf.cli.MODULE` on ARGS with the disk full under FOLDER (FULL_FROM "" for none), appending the path of each
failed write to the file REPORT.
"""

import contextlib
import fnmatch
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Optional

import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint as tf_checkpoint
from tensorflow.python.lib.io import file_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPSTATE = "tempstate7341102986524521066"  # TensorFlow's are random 64-bit numbers


def out_of_space(path: str) -> tf.errors.ResourceExhaustedError:
    """What TensorFlow raises when a write to `path` finds the disk full."""
    return tf.errors.ResourceExhaustedError(None, None, f"{path}; No space left on device")


class FullDisk:
    """The space left under `folder`, and the writes refused there (`failed`: their paths, in order)."""

    def __init__(self, folder: str, free_bytes: int, full_from: Optional[str] = None, report: Optional[str] = None):
        self.folder = os.path.abspath(str(folder))
        self.free = free_bytes
        self.full_from = full_from
        self.filling = full_from is None
        self.report = report
        self.failed: list[str] = []

    def counts(self, path: str) -> bool:
        """Whether a write to `path` takes space from this disk (starting to fill it at `full_from`)."""
        path = os.path.abspath(path)
        if not path.startswith(self.folder + os.sep):
            return False
        if not self.filling and fnmatch.fnmatch(os.path.basename(path), self.full_from):
            self.filling = True
        return self.filling

    def take(self, size: int) -> int:
        """How many of `size` bytes fit (taken from the space left)."""
        fits = min(size, self.free)
        self.free -= fits
        return fits

    def fail(self, path: str) -> tf.errors.ResourceExhaustedError:
        self.failed.append(path)
        if self.report:
            with open(self.report, "a") as f:
                f.write(path + "\n")
        return out_of_space(path)


@contextlib.contextmanager
def disk_full(
    folder, free_bytes: int = 0, full_from: Optional[str] = None, report: Optional[str] = None
) -> Iterator[FullDisk]:
    """Within the block, the disk under `folder` holds `free_bytes` more bytes (from the first write to a file
    named like `full_from`, if given); see the module."""
    disk = FullDisk(folder, free_bytes, full_from, report)
    real_write, real_writer, real_save = file_io.FileIO.write, tf.io.TFRecordWriter, tf_checkpoint.TrackableSaver.save

    def write(self, file_content):
        if not disk.counts(self.name):
            return real_write(self, file_content)
        data = file_content.encode() if isinstance(file_content, str) else bytes(file_content)
        fits = disk.take(len(data))
        real_write(self, data[:fits])
        if fits < len(data):
            raise disk.fail(self.name)

    class TFRecordWriter(real_writer):
        def __init__(self, path, options=None):
            super().__init__(path, options)
            self._path = path

        def write(self, record):
            if disk.counts(self._path):
                size = len(record) + 16  # length, its CRC, the record, its CRC
                if disk.free < size:
                    raise disk.fail(self._path)
                disk.take(size)
            super().write(record)

    def save(self, file_prefix, *args, **kwargs):
        prefix = file_prefix if isinstance(file_prefix, str) else file_prefix.numpy().decode()
        if not disk.counts(prefix):
            return real_save(self, file_prefix, *args, **kwargs)
        output = real_save(self, file_prefix, *args, **kwargs)
        written = tf.io.gfile.glob(prefix + ".data-*") + [prefix + ".index"]
        size = sum(tf.io.gfile.stat(p).length for p in written)
        if size <= disk.free:
            disk.take(size)
            return output
        data = b"".join(file_io.read_file_to_string(p, binary_mode=True) for p in written[:-1])
        for path in written:
            tf.io.gfile.remove(path)
        partial = f"{prefix}_temp/part-00000-of-00001.data-00000-of-00001.{TEMPSTATE}"
        tf.io.gfile.makedirs(os.path.dirname(partial))
        with tf.io.gfile.GFile(partial, "wb") as f:
            real_write(f, data[: disk.take(len(data))])
        raise disk.fail(partial)

    file_io.FileIO.write = write
    tf.io.TFRecordWriter = TFRecordWriter
    tf_checkpoint.TrackableSaver.save = save
    try:
        yield disk
    finally:
        file_io.FileIO.write = real_write
        tf.io.TFRecordWriter = real_writer
        tf_checkpoint.TrackableSaver.save = real_save


def run_cli_on_full_disk(
    module: str, folder, free_bytes: int, *args: str, full_from: str = "", timeout: int = 300
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Runs the binary `nlr_tf.cli.<module>` on `args` in a subprocess whose disk under `folder` holds `free_bytes`
    more bytes; returns the completed process and the paths of the writes refused, in order."""
    report = f"{folder}.{module}.disk_full_report"  # beside the folder, not in it
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    command = [sys.executable, os.path.abspath(__file__), str(folder), str(free_bytes), full_from, report, module]
    proc = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    failed = []
    if os.path.exists(report):
        with open(report) as f:
            failed = f.read().splitlines()
        os.remove(report)
    return proc, failed


def _main() -> None:
    folder, free, full_from, report, module = sys.argv[1:6]
    del sys.argv[1:6]
    binary = importlib.import_module(f"nlr_tf.cli.{module}")
    with disk_full(folder, int(free), full_from or None, report):
        binary.run()


if __name__ == "__main__":
    _main()
