"""The `manifest` source: a CSV or JSONL list of images with their labels.

The generic way in for a user's own data. Columns (CSV header or JSONL keys):

- `image`: path of the image file, relative to `image_root` (required);
- `noisy`, `verified_pos`, `verified_neg`: class names separated by `;`
  (in JSONL also a list of names); empty or absent means none;
- `split` (optional): output split; rows without it go to `default_split`;
- `id` (optional): stable image id; defaults to the `image` path.

Class names come from a classes file (`name` or `name,category` per line).
A row naming an unknown class, missing its image path, or with the wrong
number of CSV fields becomes a `BadRow` naming `file:line`. One parser
(`RowParser`) serves the local converter and the Beam pipeline, whose
workers read and parse the lines of the file (`ManifestRows.parse_line`).
"""

import csv
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from nlr_tf.data import files
from tfrecords_tools.inputs import DEFAULT_ENCODING, count_data_lines, read_classes_file, read_csv_header, text_lines
from tfrecords_tools.records import BadRow, ClassIndex, Conversion, ConversionError, Item, Record, complement

# The splits the methods read; a manifest row naming another split is a bad row unless its split is listed in
# `extra_splits` (a typo such as `training` would otherwise go into a split nothing trains on).
KNOWN_SPLITS = ("noisy", "clean", "val", "test")

LABEL_COLUMNS = ("noisy", "verified_pos", "verified_neg")
KNOWN_COLUMNS = ("image", "id", "split", *LABEL_COLUMNS)


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v for v in str(value).split(";")]


class RowParser:
    """Turns one manifest row into an `Item`.

    The one parsing code of the manifest: the local converter streams the
    file through it, and the Beam pipeline's workers call it on the lines
    they read (`ManifestRows.parse_line`). Picklable.

    Args:
        classes: `ClassIndex`.
        image_root: str. Folder the `image` paths are relative to.
        default_split: str. Split of rows without a `split` value.
        multi_label: bool. See `convert`.
        splits: frozenset of str. The split names a row may name.
        header: list of str. The CSV header's column names (stripped);
            empty for JSONL.
    """

    def __init__(
        self,
        classes: ClassIndex,
        image_root: str,
        default_split: str,
        multi_label: bool,
        splits: frozenset,
        header: Sequence[str] = (),
    ):
        self.classes = classes
        self.image_root = image_root
        self.default_split = default_split
        self.multi_label = multi_label
        self.splits = splits
        self.header = list(header)

    def csv_fields(self, origin: str, fields: list[str]) -> Optional[Item]:
        """The item of a CSV row's fields (as `csv.reader` splits them); None for a blank row."""
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            return None
        if len(fields) != len(self.header):
            return BadRow(origin, f"expected {len(self.header)} columns ({','.join(self.header)}), got {len(fields)}")
        return self.row(origin, {k: v.strip() for k, v in zip(self.header, fields)})

    def json_line(self, origin: str, line: str) -> Optional[Item]:
        """The item of a JSONL line; None for a blank line."""
        if not line.strip():
            return None
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            return BadRow(origin, f"not valid JSON: {e.msg}")
        if not isinstance(row, dict):
            return BadRow(origin, f"expected a JSON object, got {type(row).__name__}")
        return self.row(origin, row)

    def row(self, origin: str, row: dict[str, Any]) -> Item:
        """The item of a row given as a dict of column to value."""
        image = row.get("image")
        if not isinstance(image, str) or not image.strip():
            return BadRow(origin, "missing the `image` path")
        image = image.strip()
        labels = {}
        for column in LABEL_COLUMNS:
            indices, unknown = self.classes.lookup(_names(row.get(column)))
            if unknown:
                return BadRow(origin, f"unknown class {unknown[0]!r} in column {column!r}")
            labels[column] = indices
        if not self.multi_label:
            if len(labels["verified_pos"]) > 1 or len(labels["noisy"]) > 1:
                return BadRow(origin, "a single-label manifest allows one class in `noisy` and in `verified_pos`")
            if labels["verified_pos"] and not labels["verified_neg"]:
                labels["verified_neg"] = complement(labels["verified_pos"], len(self.classes))
        split = str(row.get("split") or self.default_split).strip()
        if split not in self.splits:
            return BadRow(
                origin,
                f"unknown split {split!r}: expected one of {', '.join(sorted(self.splits))} (or list it in "
                "--extra_splits)",
            )
        return Record(
            split=split,
            id=str(row.get("id") or image).strip(),
            image_path=os.path.join(self.image_root, image),
            origin=origin,
            **labels,
        )


class ManifestRows:
    """The items of a manifest file, in file order.

    Iterating streams the file here (a CSV field may hold a quoted line
    break). The Beam pipeline instead reads the file's lines in byte ranges
    on its workers and gives each to `parse_line`: one row per line.

    Args:
        path: str. The `.csv` or `.jsonl` file.
        encoding: str. Its text encoding.
        parser: `RowParser`. Its header is read from the file by `check`.
    """

    def __init__(self, path: str, encoding: str, parser: RowParser):
        self.path, self.encoding, self.parser = path, encoding, parser
        self.is_csv = path.lower().endswith(".csv")
        # Lines before the first row: a CSV's header.
        self.skip_lines = 1 if self.is_csv else 0

    def check(self) -> "ManifestRows":
        """Reads a CSV's header into the parser; returns self.

        Raises:
            ConversionError: the header lacks the `image` column, or the
                file is empty or not in its encoding.
        """
        if self.is_csv and not self.parser.header:
            self.parser.header = read_csv_header(self.path, ["image"], self.encoding)
        return self

    def __iter__(self) -> Iterator[Item]:
        self.check()
        if self.is_csv:
            reader = csv.reader(text_lines(self.path, self.encoding))
            next(reader)
            items = (self.parser.csv_fields(f"{self.path}:{reader.line_num}", fields) for fields in reader)
        else:
            lines = enumerate(text_lines(self.path, self.encoding), 1)
            items = (self.parser.json_line(f"{self.path}:{lineno}", line) for lineno, line in lines)
        return (item for item in items if item is not None)

    def parse_line(self, lineno: int, offset: int, raw: bytes) -> Optional[Item]:
        """The item of line `lineno` (1-based), `raw` its bytes from byte `offset` of the file; None if blank.

        Raises:
            ConversionError: the line is not valid in the encoding (as the
                local reader says it), or a CSV field's quotes run past
                the end of the line.
        """
        self.check()
        origin = f"{self.path}:{lineno}"
        line = _decode_line(raw, self.path, lineno, offset, self.encoding)
        if not self.is_csv:
            return self.parser.json_line(origin, line)
        fields = next(csv.reader([line]), [])
        if any("\n" in field for field in fields):
            raise ConversionError(
                f"{origin}: a quoted field runs past the end of the line; with --runner a CSV manifest is read one "
                "row per line: remove the line break from the field, or convert without --runner"
            )
        return self.parser.csv_fields(origin, fields)


def _decode_line(raw: bytes, path: str, lineno: int, offset: int, encoding: str) -> str:
    """`raw` decoded, or the error `inputs.text_lines` gives for a line not valid in `encoding`."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise ConversionError(
            f"{path}:{lineno}: byte {offset + e.start} ({raw[e.start : e.end]!r}) is not valid "
            f"{encoding.replace('-sig', '')}; pass --encoding (for example --encoding=latin-1) if the file uses "
            "another encoding"
        ) from None


def convert(
    input_path: str,
    classes_path: str,
    image_root: str = "",
    default_split: str = "noisy",
    multi_label: bool = True,
    encoding: str = DEFAULT_ENCODING,
    extra_splits: tuple[str, ...] = (),
) -> Conversion:
    """Reads a CSV or JSONL manifest.

    Args:
        input_path: str. `.csv` (with a header) or `.jsonl`/`.ndjson` file.
        classes_path: str. Classes file, one `name` or `name,category` per line.
        image_root: str. Folder the `image` paths are relative to. Defaults to
            the current folder.
        default_split: str. Split of rows without a `split` value.
            Defaults to "noisy".
        multi_label: bool. False for single-label data: each row names at
            most one noisy and one verified class, and a verified class makes
            every other class verified absent. Defaults to True.
        encoding: str. Text encoding of the manifest and the classes file.
            Defaults to UTF-8 (a byte-order mark is allowed).
        extra_splits: tuple of str. Split names allowed besides noisy,
            clean, val and test.
    """
    if not files.isfile(input_path):
        raise ConversionError(f"manifest not found: {input_path!r}")
    lower = input_path.lower()
    if not lower.endswith((".csv", ".jsonl", ".ndjson")):
        raise ConversionError(f"manifest {input_path!r} must end in .csv, .jsonl or .ndjson")
    classes = read_classes_file(classes_path, encoding)
    index = ClassIndex(classes)
    splits = frozenset(KNOWN_SPLITS) | frozenset(extra_splits)
    if default_split not in splits:
        raise ConversionError(f"--default_split={default_split} is not one of {', '.join(sorted(splits))}")
    rows = ManifestRows(input_path, encoding, RowParser(index, image_root, default_split, multi_label, splits))
    return Conversion(
        classes=classes,
        multi_label=multi_label,
        items=rows,
        source="manifest",
        total=count_data_lines(input_path) + (0 if rows.is_csv else 1),
        details={
            "input": files.absolute(input_path),
            "classes": files.absolute(classes_path),
            "image_root": image_root,
        },
    )
