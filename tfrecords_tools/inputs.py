"""Input-file helpers shared by the source converters.

Whole-input problems (a missing file, a header without a required column)
raise `ConversionError` naming the file; a bad row becomes a `BadRow` named
`file:line`, so that `--skip_bad` can skip and count it.
"""

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Union

import numpy as np
import tensorflow as tf

from nlr_tf.data import files
from nlr_tf.data.schema import ClassInfo
from tfrecords_tools.records import BadRow, ConversionError

CsvItem = Union[BadRow, tuple[str, dict[str, str]]]
DEFAULT_ENCODING = "utf-8-sig"  # UTF-8, with or without a byte-order mark


def text_lines(path: str, encoding: str = DEFAULT_ENCODING) -> Iterator[str]:
    """The lines of a text file, decoded one by one (line endings kept, as `csv.reader` needs them).

    Raises:
        ConversionError: a line is not valid in `encoding`, named by file,
            line and byte offset, with the offending bytes.
    """
    try:
        "".encode(encoding)
    except LookupError:
        raise ConversionError(f"unknown text encoding {encoding!r} (for {path})") from None
    offset = 0
    with tf.io.gfile.GFile(path, "rb") as f:  # any TensorFlow filesystem
        for lineno, raw in enumerate(_raw_lines(f), 1):
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError as e:
                bad = raw[e.start : e.end]
                raise ConversionError(
                    f"{path}:{lineno}: byte {offset + e.start} ({bad!r}) is not valid {encoding.replace('-sig', '')}; "
                    "pass --encoding (for example --encoding=latin-1) if the file uses another encoding"
                ) from None
            offset += len(raw)


def _raw_lines(f) -> Iterator[bytes]:
    """The lines of a binary file, each with its ending exactly as written (GFile's own line reading turns
    `\\r\\n` into `\\n`)."""
    rest = b""
    for block in iter(lambda: f.read(1 << 20), b""):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from (line + b"\n" for line in lines)
    if rest:
        yield rest


class Presence:
    """Whether files are there: `os.path.exists` on the local disk; on any other filesystem one listing per
    folder, kept (a request per image to an object store would take days for Open Images' 9 M)."""

    def __init__(self):
        self._listed: dict[str, set[str]] = {}

    def __call__(self, path: str) -> bool:
        if not files.is_url(path):
            return os.path.exists(path)
        folder, name = os.path.split(path)
        if folder not in self._listed:
            self._listed[folder] = set(files.listdir(folder)) if files.isdir(folder) else set()
        return name in self._listed[folder]


def require_file(path: str, what: str) -> str:
    """Returns `path`, or raises `ConversionError` when it is not a file.

    Args:
        path: str. The file.
        what: str. What the file is, for the message (e.g. "Clothing1M key list").
    """
    if not path or not files.isfile(path):
        raise ConversionError(f"{what} not found: {path!r}")
    return path


def require_dir(path: str, what: str) -> str:
    """Returns `path`, or raises `ConversionError` when it is not a folder."""
    if not path or not files.isdir(path):
        raise ConversionError(f"{what} not found: {path!r}")
    return path


def read_csv_header(path: str, required: Sequence[str], encoding: str = DEFAULT_ENCODING) -> list[str]:
    """The header row of the CSV file `path`, checked for `required` columns."""
    lines = text_lines(path, encoding)
    header = next(csv.reader(lines), None)
    lines.close()
    if not header:
        raise ConversionError(f"{path} is empty: expected a header row with {', '.join(required)}")
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise ConversionError(
            f"{path}: the header lacks the column(s) {', '.join(missing)} (it has: {', '.join(header)})"
        )
    return header


def csv_rows(path: str, required: Sequence[str], encoding: str = DEFAULT_ENCODING) -> Iterator[CsvItem]:
    """Streams the data rows of a CSV file with a header.

    Args:
        path: str. CSV file whose first row names the columns.
        required: list of str. Columns the header must hold.
        encoding: str. The file's text encoding. Defaults to UTF-8.

    Yields:
        `(origin, row)` with `origin` = `path:line` and `row` a dict of
        column to stripped value, or a `BadRow` for a row whose number of
        fields differs from the header's. Blank lines are skipped.
    """
    header = read_csv_header(path, required, encoding)
    reader = csv.reader(text_lines(path, encoding))
    next(reader)
    for fields in reader:
        origin = f"{path}:{reader.line_num}"
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(header):
            yield BadRow(origin, f"expected {len(header)} columns ({','.join(header)}), got {len(fields)}")
            continue
        yield origin, {k: v.strip() for k, v in zip(header, fields)}


def count_data_lines(path: str) -> int:
    """Number of lines of `path` after the header (a fast progress-bar total)."""
    lines, last = 0, b"\n"
    with tf.io.gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0)


def seeded_split(ids: Iterable[str], shares: Sequence[tuple[str, float]], seed: int) -> dict[str, str]:
    """Assigns ids to named parts by a seeded permutation of the sorted ids.

    The result depends only on the set of ids and the seed, not on the order
    the source lists them in. Part i receives
    `round(c_i * n) - round(c_{i-1} * n)` ids, with c_i the cumulative share.

    Args:
        ids: iterable of str. Image ids (duplicates count once).
        shares: list of (part name, share) pairs; shares are >= 0 and sum to 1.
        seed: int. Seed of the permutation.

    Returns:
        dict of id to part name.
    """
    ordered = sorted(set(ids))
    n = len(ordered)
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum([share for _, share in shares]) * n).astype(int)
    bounds[-1] = n
    assignment: dict[str, str] = {}
    start = 0
    for (name, _), stop in zip(shares, bounds):
        for j in order[start:stop]:
            assignment[ordered[j]] = name
        start = max(start, stop)
    return assignment


def check_share(name: str, value: float) -> float:
    """`value` if it lies in [0, 1], else a `ConversionError` naming the option."""
    if not 0.0 <= value <= 1.0:
        raise ConversionError(f"{name} must be in [0, 1], got {value}")
    return value


def read_classes_file(path: str, encoding: str = DEFAULT_ENCODING) -> list[ClassInfo]:
    """Reads a classes file: one class per line, `name` or `name,category`.

    Blank lines and lines starting with `#` are ignored.
    """
    if not files.isfile(path):
        raise ConversionError(f"classes file not found: {path!r}")
    classes = []
    seen = set()
    for lineno, line in enumerate(text_lines(path, encoding), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) > 2 or not parts[0]:
            raise ConversionError(f"{path}:{lineno}: expected `name` or `name,category`, got {line!r}")
        name = parts[0]
        if name in seen:
            raise ConversionError(f"{path}:{lineno}: class {name!r} is listed twice")
        seen.add(name)
        category = parts[1] if len(parts) == 2 and parts[1] else "others"
        classes.append(ClassInfo(id=name, name=name, category=category))
    if not classes:
        raise ConversionError(f"classes file {path!r} lists no class")
    return classes
