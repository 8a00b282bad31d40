"""What converters produce: `Record`s, `BadRow`s and a `Conversion`.

A converter turns source files into one stream of `Record | BadRow` items,
each naming its split. The writer decides what a `BadRow` means: a
one-line error, or (with `--skip_bad`) a skipped and counted row.
"""

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

import numpy as np

from nlr_tf.data.schema import ClassInfo


@dataclasses.dataclass
class Record:
    """One image with its labels, before encoding.

    Exactly one of `image_path`, `image_bytes` and `image_array` is set.

    Args:
        split: str. Output split (`noisy`, `clean`, `val`, `test`, ...).
        id: str. Stable image id, unique within the split.
        noisy: list of int. Noisy class indices (may be empty).
        verified_pos: list of int. Verified present classes.
        verified_neg: list of int. Verified absent classes.
        true: list of int or None. Known truth (built-in benchmark only).
        image_path: str or None. File to read.
        image_bytes: bytes or None. Encoded image already in memory.
        image_array: uint8 array [H, W] or [H, W, C] or None; written as PNG.
        origin: str. `file:row` of the source, used in error messages.
    """

    split: str
    id: str
    noisy: Sequence[int] = ()
    verified_pos: Sequence[int] = ()
    verified_neg: Sequence[int] = ()
    true: Optional[Sequence[int]] = None
    image_path: Optional[str] = None
    image_bytes: Optional[bytes] = None
    image_array: Optional[np.ndarray] = None
    origin: str = ""


@dataclasses.dataclass
class BadRow:
    """A source row that cannot become a record.

    Args:
        origin: str. `file:row` (or `file` and an id) naming the row.
        reason: str. What is wrong, in one line.
    """

    origin: str
    reason: str

    def message(self) -> str:
        return f"{self.origin}: {self.reason}"


Item = Union[Record, BadRow]


@dataclasses.dataclass
class Conversion:
    """A converter's output: the classes and the stream of items.

    Args:
        classes: list of `ClassInfo`; index i is class i.
        multi_label: bool.
        items: iterable of `Record | BadRow`.
        source: str. Converter name written to the provenance.
        total: int or None. Number of items when known (progress bar).
        details: dict. Source-specific provenance (input files, options).
    """

    classes: list[ClassInfo]
    multi_label: bool
    items: Iterable[Item]
    source: str
    total: Optional[int] = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class ConversionError(ValueError):
    """A problem with the converter's inputs as a whole (not one row)."""


class ClassIndex:
    """Maps class names (or ids) to indices, with a clear unknown-class error."""

    def __init__(self, classes: Sequence[ClassInfo]):
        self.classes = list(classes)
        self._index: dict[str, int] = {}
        for i, c in enumerate(self.classes):
            for key in (c.name, c.id):
                if key in self._index and self._index[key] != i:
                    raise ConversionError(f"class name or id {key!r} is used by two classes")
                self._index[key] = i

    def __len__(self) -> int:
        return len(self.classes)

    def lookup(self, names: Iterable[str]) -> tuple[list[int], list[str]]:
        """Returns (indices, unknown names)."""
        indices, unknown = [], []
        for name in names:
            name = name.strip()
            if not name:
                continue
            if name in self._index:
                indices.append(self._index[name])
            else:
                unknown.append(name)
        return sorted(set(indices)), unknown

    def get(self, name: str) -> Optional[int]:
        return self._index.get(name)


def complement(positives: Iterable[int], num_classes: int) -> list[int]:
    """All classes not in `positives`: the verified negatives of a fully verified image."""
    pos = set(positives)
    return [c for c in range(num_classes) if c not in pos]
