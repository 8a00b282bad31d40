"""Output folders that appear only when complete.

Every writer of a folder (a dataset, a feature cache, cleaned labels) writes
into a temporary sibling and renames it at the end, so a failed or
interrupted run never leaves a folder that looks complete.
"""

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator


class OutputDirError(ValueError):
    """An output folder that cannot be written (it exists and may not be replaced)."""


@contextlib.contextmanager
def atomic_output_dir(output_dir: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary sibling folder that becomes `output_dir` on success.

    On any failure (or interrupt) the temporary folder is removed and
    `output_dir` is left as it was: a run that fails never leaves a
    dataset that looks complete.

    Raises:
        OutputDirError: `output_dir` exists and `overwrite` is False.
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise OutputDirError(f"output folder {output_dir!r} already exists (pass --overwrite to replace it)")
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = os.path.join(parent, f".{os.path.basename(output_dir)}.incomplete-{uuid.uuid4().hex[:8]}")
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
