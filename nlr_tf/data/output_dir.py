"""Output folders that appear only when complete, on any TensorFlow filesystem.

Every writer of a folder (a dataset, a feature cache, cleaned labels) writes
into a temporary sibling `.NAME.incomplete-HOST-PID-XXXXXXXX` and renames it
at the end, so a failed or interrupted run never leaves a folder that looks
complete. On the local disk that rename is one atomic step. Other
filesystems (`gs://`, `ram://`) rename a folder file by file, if at all: there
the files are moved into the output folder one by one with `dataset.json`,
the marker every reader requires (`schema.load_dataset_info`), moved last, so
the folder is not a dataset until its last file is in place.

A run killed outright (SIGKILL, a lost machine) cannot remove its
temporary folder; the next run into the same output finds it: one whose
process is gone (same host, no such PID) is removed, with a line saying so;
any other (a run still going, or one from another machine) is reported and
removed only with `--overwrite`.
"""

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import tensorflow as tf
from absl import logging

from nlr_tf.data import files
from nlr_tf.data.schema import DATASET_JSON

_INCOMPLETE = ".incomplete-"


class OutputDirError(ValueError):
    """An output folder that cannot be written (it exists and may not be replaced)."""


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _process_gone(name: str) -> bool:
    """Whether the run that made the temporary folder `name` is known to be gone (same host, PID not alive)."""
    parts = name.rsplit(_INCOMPLETE, 1)[-1].split("-")
    if len(parts) < 3 or parts[0] != _host() or not parts[1].isdigit():
        return False  # another machine's, or an older name without its process: unknown
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def stale_incomplete_dirs(output_dir: str) -> list[str]:
    """The temporary folders of earlier runs into `output_dir` that are still there."""
    output_dir = files.absolute(output_dir)
    parent = os.path.dirname(output_dir)
    prefix = f".{os.path.basename(output_dir)}{_INCOMPLETE}"
    if not files.isdir(parent):
        return []
    return [
        os.path.join(parent, name)
        for name in files.listdir(parent)
        if name.startswith(prefix) and not name.endswith(".replaced") and files.isdir(os.path.join(parent, name))
    ]


def _clear_stale(output_dir: str, overwrite: bool) -> None:
    for path in stale_incomplete_dirs(output_dir):
        size = files.folder_size(path) / 2**20
        if _process_gone(os.path.basename(path)) or overwrite:
            files.remove_tree(path)
            logging.warning("removed %s (%.1f MB), the unfinished output of an interrupted earlier run", path, size)
        else:
            logging.warning(
                "%s (%.1f MB) is the unfinished output of another run into %s: still running, or interrupted on "
                "another machine; --overwrite removes it",
                path,
                size,
                output_dir,
            )


def _move_files(source: str, target: str, last: tuple[str, ...]) -> None:
    """Moves the files of folder `source` into `target` one by one, those named in `last` last, then removes it."""
    names = [os.path.relpath(os.path.join(d, f), source) for d, _, fs in tf.io.gfile.walk(source) for f in fs]
    names.sort(key=lambda n: (last.index(n) if n in last else -1, n))
    for name in names:
        files.makedirs(os.path.dirname(os.path.join(target, name)))
        tf.io.gfile.rename(os.path.join(source, name), os.path.join(target, name), overwrite=True)
    files.remove_tree(source)


def _commit(tmp_dir: str, output_dir: str, last: tuple[str, ...]) -> None:
    if not files.is_url(output_dir):
        if os.path.exists(output_dir):
            trash = f"{tmp_dir}.replaced"
            os.rename(output_dir, trash)
            os.rename(tmp_dir, output_dir)
            files.remove_tree(trash)
        else:
            os.rename(tmp_dir, output_dir)
        return
    if files.exists(output_dir):
        for name in reversed(last):  # first: the old folder stops looking complete
            files.remove(os.path.join(output_dir, name))
        files.remove_tree(output_dir)
    files.makedirs(output_dir)
    _move_files(tmp_dir, output_dir, last)


@contextlib.contextmanager
def atomic_output_dir(
    output_dir: str, overwrite: bool = False, last: tuple[str, ...] = (DATASET_JSON,)
) -> Iterator[str]:
    """Yields a temporary sibling folder that becomes `output_dir` on success.

    `last`: the files that mark the folder complete, in the order they are
    moved in last where a folder is not renamed in one step.

    On any failure (or interrupt) the temporary folder is removed and
    `output_dir` is left as it was: a run that fails never leaves a
    dataset that looks complete. Earlier runs' leftover temporary folders
    are handled first (see the module docstring).

    Raises:
        OutputDirError: `output_dir` exists and `overwrite` is False.
    """
    output_dir = files.absolute(output_dir)
    if files.exists(output_dir) and not overwrite:
        raise OutputDirError(f"output folder {output_dir!r} already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(output_dir)
    files.makedirs(parent)
    _clear_stale(output_dir, overwrite)
    name = f".{os.path.basename(output_dir)}{_INCOMPLETE}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_dir = os.path.join(parent, name)
    files.makedirs(tmp_dir)
    try:
        yield tmp_dir
        _commit(tmp_dir, output_dir, last)
    except BaseException:
        files.remove_tree(tmp_dir)
        raise
