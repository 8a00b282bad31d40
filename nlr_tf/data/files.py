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

import io
import json
import os
import re
import uuid
from typing import Any, Optional

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


def write_bytes(path: str, content: bytes) -> None:
    """Writes `content` to `path` whole or not at all, making its folder if needed."""
    makedirs(os.path.dirname(path))
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with _tf().io.gfile.GFile(tmp, "wb") as f:
            f.write(content)
        _tf().io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if _tf().io.gfile.exists(tmp):
            _tf().io.gfile.remove(tmp)
        raise


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
