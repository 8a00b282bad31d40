"""Files on any TensorFlow filesystem: the local disk, `gs://`, `ram://`, ...

Every path the project reads or writes goes through `tf.io.gfile` by way of
these functions, so a dataset, a run folder, a feature cache, a report or
an export may live wherever TensorFlow can reach. A local path is made
absolute; a URL (`scheme://...`) is left as it is.

Single files are written whole or not at all: into a temporary name beside
the target, then renamed over it (a file rename is atomic on a local disk,
and on an object store such as GCS the object appears whole once copied).
Folders are a different matter (see `output_dir.atomic_output_dir`): only a
local disk renames a folder in one step.

TensorFlow is imported on first use, not with this module, so that the
dataset contract (`schema`) and the binaries' flag definitions load without it.
"""

import contextlib
import errno
import io
import json
import os
import re
import sys
import uuid
from typing import Any, Iterator, Optional

import numpy as np


def _tf():
    import tensorflow as tf

    return tf


def file_errors() -> tuple[type[Exception], ...]:
    """What a failed read or write raises: OSError on the local disk, a tf.errors.OpError through tf.io.gfile."""
    return (OSError, _tf().errors.OpError)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """Whether `path` names a filesystem by its scheme (`gs://bucket/x`, `ram://x`), not the local disk."""
    return bool(_URL.match(path or "")) and not path.startswith("file://")


def absolute(path: str) -> str:
    """`path` made absolute on the local disk; a URL unchanged but for a trailing slash."""
    if is_url(path):
        return path.rstrip("/") if not path.endswith("://") else path
    return os.path.abspath(path.removeprefix("file://"))


def exists(path: str) -> bool:
    return _tf().io.gfile.exists(path)


def isdir(path: str) -> bool:
    return _tf().io.gfile.isdir(path)


def isfile(path: str) -> bool:
    return _tf().io.gfile.exists(path) and not _tf().io.gfile.isdir(path)


def makedirs(path: str) -> None:
    if path:
        _tf().io.gfile.makedirs(path)


def size(path: str) -> int:
    return _tf().io.gfile.stat(path).length


def listdir(path: str) -> list[str]:
    """The names in folder `path` (no trailing slashes, as `os.listdir`)."""
    return sorted(name.rstrip("/") for name in _tf().io.gfile.listdir(path))


def glob(pattern: str) -> list[str]:
    return sorted(_tf().io.gfile.glob(pattern))


def remove(path: str) -> None:
    """Removes the file `path` if it is there."""
    if _tf().io.gfile.exists(path):
        _tf().io.gfile.remove(path)


def remove_tree(path: str) -> None:
    """Removes the folder `path` and everything in it, if it is there."""
    if _tf().io.gfile.exists(path):
        _tf().io.gfile.rmtree(path)


def folder_size(path: str) -> int:
    """Bytes in the files under `path`."""
    return sum(size(os.path.join(d, f)) for d, _, names in _tf().io.gfile.walk(path) for f in names)


def copy(source: str, target: str) -> None:
    _tf().io.gfile.copy(source, target, overwrite=True)


def read_bytes(path: str) -> bytes:
    with _tf().io.gfile.GFile(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    with _tf().io.gfile.GFile(path, "r") as f:
        return f.read()


def read_json(path: str) -> Any:
    return json.loads(read_text(path))


def read_json_if_exists(path: str) -> Optional[Any]:
    return read_json(path) if _tf().io.gfile.exists(path) else None


@contextlib.contextmanager
def written_whole(path: str) -> Iterator[str]:
    """A temporary path beside `path` for a writer to write to; once the block ends it is renamed over `path`
    (whole or not at all), and removed if the block fails. It ends as `path` does (`.keras`, `.weights.h5`: Keras'
    savers ask for their suffix). Makes the folder if needed."""
    makedirs(os.path.dirname(path))
    tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex[:8]}-{os.path.basename(path)}")
    try:
        yield tmp
        _tf().io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if _tf().io.gfile.exists(tmp):
            _tf().io.gfile.remove(tmp)
        raise


def write_bytes(path: str, content: bytes) -> None:
    """Writes `content` to `path` whole or not at all, making its folder if needed."""
    with written_whole(path) as tmp, _tf().io.gfile.GFile(tmp, "wb") as f:
        f.write(content)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value: Any, indent: Optional[int] = 1) -> None:
    """Writes `value` as JSON to `path` whole or not at all (a reader never sees half a file)."""
    write_text(path, json.dumps(value, indent=indent))


def save_npz(path: str, compressed: bool = False, **arrays: np.ndarray) -> None:
    """`np.savez` to `path` on any filesystem, whole or not at all."""
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of the `.npz` file at `path` (strings and numbers only: no pickles)."""
    with np.load(io.BytesIO(read_bytes(path))) as z:
        return {k: z[k] for k in z.files}


# What TensorFlow's POSIX filesystem says of a write refused for lack of space: `IOError(path, errno)` of
# tsl/platform/errors.cc, "PATH; strerror(errno)", raised as ResourceExhaustedError (ENOSPC and EDQUOT map to
# RESOURCE_EXHAUSTED). Its kernels may put a prefix ("{{function_node ...}} ") before it or a suffix after.
_TF_OUT_OF_SPACE = re.compile(r"(?P<path>[^\n]+?); (?P<cause>No space left on device|Disk quota exceeded)")
_CAUSES = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_TF_CAUSES = {"No space left on device": _CAUSES[errno.ENOSPC], "Disk quota exceeded": _CAUSES[errno.EDQUOT]}


def out_of_space(error: BaseException) -> Optional[str]:
    """The line "PATH: no space left on device" if `error` is a write refused for lack of space, else None.

    A full disk (ENOSPC) or an exhausted quota (EDQUOT) reaches the project
    as an `OSError` of Python's own files (whose `filename` is the path, if
    Python knew it: a failed `write` does not name its file, which is then
    looked for among the open files of the frames that raised), or as a
    `tf.errors.OpError` of TensorFlow's (`tf.io.gfile`, TFRecord shards,
    checkpoints, SavedModels) whose message carries the path. The error may
    also be the cause or context of the one raised (an error re-raised
    with `from`). The binaries stop on such an error with this one line
    (`nlr_tf.cli.faults`) rather than a traceback.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _CAUSES:
            path = error.filename or _open_file(error.__traceback__)
            cause = _CAUSES[error.errno]
            return f"{path}: {cause}" if path else cause
        if "tensorflow" in sys.modules and isinstance(error, _tf().errors.OpError):  # no TF, no TF error
            found = _TF_OUT_OF_SPACE.search(error.message or "")
            if found:
                path = found["path"].rsplit("}}", 1)[-1].strip()  # without a kernel's "{{function_node ...}}"
                return f"{path}: {_TF_CAUSES[found['cause']]}"
        error = error.__cause__ or error.__context__
    return None


def _open_file(traceback) -> Optional[str]:
    """The name of a Python file opened for writing in the frames of `traceback`, innermost first (None: none).

    The file is usually closed by now (a `with` block closed it as the error
    went up), so its mode, not `writable()`, says it was written."""
    frames = []
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, io.IOBase):
                name, mode = getattr(value, "name", None), getattr(value, "mode", "")
                if isinstance(name, str) and isinstance(mode, str) and set(mode) & set("wax+"):
                    return name
    return None
