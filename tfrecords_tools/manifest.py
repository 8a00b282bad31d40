"""The `manifest` source: a CSV or JSONL list of images with their labels.

The generic way in for a user's own data. Columns (CSV header or JSONL keys):

- `image`: path of the image file, relative to `image_root` (required);
- `noisy`, `verified_pos`, `verified_neg`: class names separated by `;`
  (in JSONL also a list of names); empty or absent means none;
- `split` (optional): output split; rows without it go to `default_split`;
- `id` (optional): stable image id; defaults to the `image` path.

Class names come from a classes file (`name` or `name,category` per line).
A row naming an unknown class, missing its image path, or with the wrong
number of CSV fields becomes a `BadRow` naming `file:line`.
"""

import json
import os
from collections.abc import Iterator
from typing import Any

from tfrecords_tools.inputs import DEFAULT_ENCODING, count_data_lines, csv_rows, read_classes_file, text_lines
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


def _row_to_item(
    row: dict[str, Any],
    origin: str,
    classes: ClassIndex,
    image_root: str,
    default_split: str,
    multi_label: bool,
    splits: frozenset,
) -> Item:
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        return BadRow(origin, "missing the `image` path")
    image = image.strip()
    labels = {}
    for column in LABEL_COLUMNS:
        indices, unknown = classes.lookup(_names(row.get(column)))
        if unknown:
            return BadRow(origin, f"unknown class {unknown[0]!r} in column {column!r}")
        labels[column] = indices
    if not multi_label:
        if len(labels["verified_pos"]) > 1 or len(labels["noisy"]) > 1:
            return BadRow(origin, "a single-label manifest allows one class in `noisy` and in `verified_pos`")
        if labels["verified_pos"] and not labels["verified_neg"]:
            labels["verified_neg"] = complement(labels["verified_pos"], len(classes))
    split = str(row.get("split") or default_split).strip()
    if split not in splits:
        return BadRow(
            origin,
            f"unknown split {split!r}: expected one of {', '.join(sorted(splits))} (or list it in --extra_splits)",
        )
    return Record(
        split=split,
        id=str(row.get("id") or image).strip(),
        image_path=os.path.join(image_root, image),
        origin=origin,
        **labels,
    )


def _csv_rows(path: str, encoding: str) -> Iterator[tuple[str, Any]]:
    for item in csv_rows(path, required=["image"], encoding=encoding):
        yield (item.origin, item) if isinstance(item, BadRow) else item


def _jsonl_rows(path: str, encoding: str) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(text_lines(path, encoding), 1):
        origin = f"{path}:{lineno}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield origin, BadRow(origin, f"not valid JSON: {e.msg}")
            continue
        if not isinstance(row, dict):
            yield origin, BadRow(origin, f"expected a JSON object, got {type(row).__name__}")
        else:
            yield origin, row


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
    if not os.path.isfile(input_path):
        raise ConversionError(f"manifest not found: {input_path!r}")
    lower = input_path.lower()
    if lower.endswith(".csv"):
        rows = _csv_rows
    elif lower.endswith((".jsonl", ".ndjson")):
        rows = _jsonl_rows
    else:
        raise ConversionError(f"manifest {input_path!r} must end in .csv, .jsonl or .ndjson")
    classes = read_classes_file(classes_path, encoding)
    index = ClassIndex(classes)
    splits = frozenset(KNOWN_SPLITS) | frozenset(extra_splits)
    if default_split not in splits:
        raise ConversionError(f"--default_split={default_split} is not one of {', '.join(sorted(splits))}")

    def items() -> Iterator[Item]:
        for origin, row in rows(input_path, encoding):
            yield (
                row
                if isinstance(row, BadRow)
                else _row_to_item(row, origin, index, image_root, default_split, multi_label, splits)
            )

    return Conversion(
        classes=classes,
        multi_label=multi_label,
        items=items(),
        source="manifest",
        total=count_data_lines(input_path) + (0 if rows is _csv_rows else 1),
        details={
            "input": os.path.abspath(input_path),
            "classes": os.path.abspath(classes_path),
            "image_root": image_root,
        },
    )
