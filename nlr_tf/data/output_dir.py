"""Output folders that appear only when complete.

Every writer of a folder (a dataset, a feature cache, cleaned labels) writes
into a temporary sibling `.NAME.incomplete-HOST-PID-XXXXXXXX` and renames it
at the end, so a failed or interrupted run never leaves a folder that looks
complete. A run killed outright (SIGKILL, a lost machine) cannot remove its
temporary folder; the next run into the same output finds it: one whose
process is gone (same host, no such PID) is removed, with a line saying so;
any other (a run still going, or one from another machine) is reported and
removed only with `--overwrite`.
"""

import contextlib
import glob
import os
import shutil
import socket
import uuid
from collections.abc import Iterator

from absl import logging

_INCOMPLETE = ".incomplete-"


class OutputDirError(ValueError):
    """An output folder that cannot be written (it exists and may not be replaced)."""


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _folder_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


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
    """The temporary folders of earlier runs into `output_dir` that are still on disk."""
    output_dir = os.path.abspath(output_dir)
    pattern = os.path.join(os.path.dirname(output_dir), f".{glob.escape(os.path.basename(output_dir))}{_INCOMPLETE}*")
    return sorted(p for p in glob.glob(pattern) if os.path.isdir(p))


def _clear_stale(output_dir: str, overwrite: bool) -> None:
    for path in stale_incomplete_dirs(output_dir):
        size = _folder_size(path) / 2**20
        if _process_gone(os.path.basename(path)) or overwrite:
            shutil.rmtree(path, ignore_errors=True)
            logging.warning("removed %s (%.1f MB), the unfinished output of an interrupted earlier run", path, size)
        else:
            logging.warning(
                "%s (%.1f MB) is the unfinished output of another run into %s: still running, or interrupted on "
                "another machine; --overwrite removes it",
                path,
                size,
                output_dir,
            )


@contextlib.contextmanager
def atomic_output_dir(output_dir: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary sibling folder that becomes `output_dir` on success.

    On any failure (or interrupt) the temporary folder is removed and
    `output_dir` is left as it was: a run that fails never leaves a
    dataset that looks complete. Earlier runs' leftover temporary folders
    are handled first (see the module docstring).

    Raises:
        OutputDirError: `output_dir` exists and `overwrite` is False.
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise OutputDirError(f"output folder {output_dir!r} already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    _clear_stale(output_dir, overwrite)
    name = f".{os.path.basename(output_dir)}{_INCOMPLETE}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_dir = os.path.join(parent, name)
    os.makedirs(tmp_dir)
    try:
        yield tmp_dir
        if os.path.exists(output_dir):
            trash = f"{tmp_dir}.replaced"
            os.rename(output_dir, trash)
            os.rename(tmp_dir, output_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
