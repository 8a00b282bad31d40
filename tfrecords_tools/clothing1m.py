r"""Clothing1M (Xiao et al. 2015) from its key and label text files.

Layout of the Clothing1M folder, as distributed::

    category_names_eng.txt     the 14 class names, one per line (index = line)
    noisy_label_kv.txt         `images/0/46/3146984028,2658209476.jpg 0` per line
    clean_label_kv.txt         same format, the manually verified labels
    noisy_train_key_list.txt   one image key per line
    clean_train_key_list.txt
    clean_val_key_list.txt
    clean_test_key_list.txt
    images/0 ... images/9/     the images; keys are paths relative to the folder

Keys are separated from labels by whitespace (keys may hold commas but no
spaces); labels are class indices 0..13. Some images have both a noisy and
a clean label.

Splits (the dataset's own protocol, which Hu et al. 2019 follow: the noisy
set for training, the clean training subset as the small verified set, the
clean validation and test sets for evaluation):

- `noisy`: the keys of `noisy_train_key_list.txt` with their noisy label.
- `clean`, `val`, `test`: the keys of `clean_{train,val,test}_key_list.txt`
  with their clean label as the verified class (single-label: every other
  class is verified absent), plus the noisy label where the image has one.

Single-label. Ids are the keys; images are read from `image_root/<key>`
(`image_root` defaults to the Clothing1M folder). A malformed label line, a
label outside 0..13, a key repeated with another label, and a listed key
without the label its split needs are bad rows.
"""

import os
import re
from collections.abc import Iterator
from typing import Optional

from nlr_tf.data.schema import ClassInfo
from tfrecords_tools import inputs
from tfrecords_tools.records import BadRow, Conversion, ConversionError, Item, Record, complement

SOURCE = "clothing1m"
_INTEGER = re.compile(r"^-?[0-9]+$")
CLASS_NAMES_FILE = "category_names_eng.txt"
LABEL_FILES = {"noisy": "noisy_label_kv.txt", "clean": "clean_label_kv.txt"}
KEY_LISTS = {
    "noisy": "noisy_train_key_list.txt",
    "clean": "clean_train_key_list.txt",
    "val": "clean_val_key_list.txt",
    "test": "clean_test_key_list.txt",
}


def convert(
    clothing1m_dir: str, image_root: Optional[str] = None, encoding: str = inputs.DEFAULT_ENCODING
) -> Conversion:
    """Converts the Clothing1M text files (see the module docstring).

    Args:
        clothing1m_dir: str. The folder holding `category_names_eng.txt`,
            the `*_label_kv.txt` and the `*_key_list.txt` files.
        image_root: str. Folder the keys are relative to. Defaults to
            `clothing1m_dir`.
        encoding: str. The text files' encoding. Defaults to UTF-8 (with
            or without a byte-order mark).

    Returns:
        A single-label `Conversion`.

    Raises:
        ConversionError: a missing file or an empty class list.
    """
    inputs.require_dir(clothing1m_dir, "Clothing1M folder")
    files = {"classes": os.path.join(clothing1m_dir, CLASS_NAMES_FILE)}
    files.update({f"{kind}_labels": os.path.join(clothing1m_dir, f) for kind, f in LABEL_FILES.items()})
    files.update({f"{split}_keys": os.path.join(clothing1m_dir, f) for split, f in KEY_LISTS.items()})
    for key, path in files.items():
        inputs.require_file(path, f"Clothing1M file ({key})")
    classes = _read_class_names(files["classes"], encoding)
    image_root = image_root or clothing1m_dir
    items = _items(files, len(classes), image_root, encoding)
    total = sum(_count_lines(files[f"{split}_keys"], encoding) for split in KEY_LISTS)
    details = {"files": files, "image_root": image_root}
    return Conversion(classes=classes, multi_label=False, items=items, source=SOURCE, total=total, details=details)


def _read_class_names(path: str, encoding: str) -> list[ClassInfo]:
    names = [line.strip() for line in inputs.text_lines(path, encoding) if line.strip()]
    if not names:
        raise ConversionError(f"{path} lists no class")
    if len(set(names)) != len(names):
        raise ConversionError(f"{path} lists a class name twice")
    return [ClassInfo(id=name, name=name) for name in names]


def _count_lines(path: str, encoding: str) -> int:
    return sum(1 for line in inputs.text_lines(path, encoding) if line.strip())


def _read_labels(path: str, num_classes: int, labels: dict[str, int], encoding: str) -> Iterator[BadRow]:
    """Fills `labels` (key -> class index) from a `key label` file."""
    for lineno, line in enumerate(inputs.text_lines(path, encoding), 1):
        fields = line.split()
        if not fields:
            continue
        origin = f"{path}:{lineno}"
        if len(fields) != 2 or not _INTEGER.match(fields[1]):
            yield BadRow(origin, f"expected `<image key> <class index>`, got {line.strip()!r}")
            continue
        key, label = fields[0], int(fields[1])
        if not 0 <= label < num_classes:
            yield BadRow(origin, f"label {label} is not a class index 0..{num_classes - 1}")
        elif labels.setdefault(key, label) != label:
            yield BadRow(origin, f"key {key!r} already has the label {labels[key]}")


def _keys(path: str, encoding: str) -> Iterator[tuple[str, str]]:
    """Yields `(origin, key)` of a key list."""
    for lineno, line in enumerate(inputs.text_lines(path, encoding), 1):
        if line.strip():
            yield f"{path}:{lineno}", line.strip()


def _items(files: dict[str, str], num_classes: int, image_root: str, encoding: str) -> Iterator[Item]:
    noisy: dict[str, int] = {}
    clean: dict[str, int] = {}
    yield from _read_labels(files["noisy_labels"], num_classes, noisy, encoding)
    yield from _read_labels(files["clean_labels"], num_classes, clean, encoding)
    for split in KEY_LISTS:
        kind = "noisy" if split == "noisy" else "clean"
        needed = noisy if kind == "noisy" else clean
        for origin, key in _keys(files[f"{split}_keys"], encoding):
            if key not in needed:
                yield BadRow(origin, f"key {key!r} has no label in {files[f'{kind}_labels']}")
                continue
            verified = [] if split == "noisy" else [clean[key]]
            yield Record(
                split=split,
                id=key,
                noisy=_as_list(noisy.get(key)),
                verified_pos=verified,
                verified_neg=complement(verified, num_classes) if verified else [],
                image_path=os.path.join(image_root, key),
                origin=origin,
            )


def _as_list(value: Optional[int]) -> list[int]:
    return [] if value is None else [value]
