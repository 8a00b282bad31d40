"""The dataset contract: TFRecord feature keys and `dataset.json` metadata.

A dataset is a folder holding `dataset.json`, `label_map.json` and shards
named `SPLIT-00000-of-000NN.tfrecord`, on any TensorFlow filesystem. This
module reads and writes the two JSON files and validates them; it imports no
TensorFlow until it touches a file.
"""

import dataclasses
import json
import os
from typing import Any

from nlr_tf.data import files

SCHEMA_VERSION = 1

# === tf.train.Example keys ===
IMAGE_ENCODED = "image/encoded"
IMAGE_ID = "image/id"
LABEL_NOISY = "label/noisy"
LABEL_VERIFIED_POS = "label/verified_pos"
LABEL_VERIFIED_NEG = "label/verified_neg"
# Only where the truth is known (the built-in benchmark). Training never reads it.
LABEL_TRUE = "label/true"
# Optional, float list of length d: the raw cleaned labels (Veit's c-hat, in
# [0, 1]) of a split written by `nlr-clean-labels`, whose `label/noisy` then
# holds the thresholded c-hat. Training never reads it.
LABEL_CLEANED_SCORES = "label/cleaned_scores"

# In a feature cache, pooled backbone features take the place of the image:
# a float list of length F, or (a float16 cache) F little-endian float16
# values as one bytes string under their own key, so that a record parses
# one way only.
FEATURES = "features"
FEATURES_FLOAT16 = "features/float16"
# The dtypes a cache stores its features in; every reader gets float32.
FEATURE_DTYPES = ("float32", "float16")

DATASET_JSON = "dataset.json"
LABEL_MAP_JSON = "label_map.json"


def shard_name(split: str, index: int, total: int) -> str:
    """File name of shard `index` (0-based) of `total` for `split`."""
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


class DatasetError(ValueError):
    """A dataset folder that does not satisfy the contract."""


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    """One class of the label map.

    Args:
        id: str. Stable identifier (a name, a `/m/...` machine id, a synset).
        name: str. Human readable name.
        category: str. High-level group used for per-category reports.
    """

    id: str
    name: str
    category: str = "others"


@dataclasses.dataclass
class SplitInfo:
    num_records: int
    num_shards: int
    files: list[str]


@dataclasses.dataclass
class DatasetInfo:
    """The contents of `dataset.json` plus the label map it points to.

    Args:
        num_classes: int. Number of classes d.
        multi_label: bool. Whether an image may hold several classes.
        splits: dict of split name to `SplitInfo`.
        classes: list of `ClassInfo`, index i is class i.
        provenance: dict. Source, converter version, arguments, noise
            statistics.
        skipped: dict. Count and list of the bad input rows skipped with
            `--skip_bad` (empty when nothing was skipped).
        path: str. The dataset folder (not serialized).
    """

    num_classes: int
    multi_label: bool
    splits: dict[str, SplitInfo]
    classes: list[ClassInfo]
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: dict[str, Any] = dataclasses.field(default_factory=lambda: {"count": 0, "rows": []})
    path: str = ""

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def split_files(self, split: str) -> list[str]:
        """Absolute paths of the shards of `split`; a clear error if absent."""
        if split not in self.splits:
            raise DatasetError(
                f"dataset {self.path!r} has no split {split!r}; it has: {', '.join(sorted(self.splits))}"
            )
        return [os.path.join(self.path, f) for f in self.splits[split].files]

    @property
    def feature_dim(self) -> int:
        """Length of the cached features (0 for a dataset of images)."""
        return int(self.provenance.get("feature_cache", {}).get("feature_dim", 0))

    @property
    def feature_dtype(self) -> str:
        """The dtype the cached features are stored in ("float32" unless the cache says otherwise)."""
        return str(self.provenance.get("feature_cache", {}).get("dtype", "float32"))

    def has_split(self, split: str) -> bool:
        return split in self.splits and self.splits[split].num_records > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "num_classes": self.num_classes,
            "multi_label": self.multi_label,
            "label_map": LABEL_MAP_JSON,
            "splits": {k: dataclasses.asdict(v) for k, v in sorted(self.splits.items())},
            "provenance": self.provenance,
            "skipped": self.skipped,
        }

    def write(self, directory: str) -> None:
        """Writes `label_map.json` then `dataset.json` into `directory`."""
        label_map = {str(i): dataclasses.asdict(c) for i, c in enumerate(self.classes)}
        files.write_json(os.path.join(directory, LABEL_MAP_JSON), label_map)
        files.write_json(os.path.join(directory, DATASET_JSON), self.to_json())


def load_dataset_info(path: str, check_files: bool = True) -> DatasetInfo:
    """Reads and validates the dataset folder `path`.

    Raises:
        DatasetError: naming the missing or inconsistent part.
    """
    meta_path = os.path.join(path, DATASET_JSON)
    if not files.isdir(path):
        raise DatasetError(f"dataset folder not found: {path!r}")
    if not files.isfile(meta_path):
        raise DatasetError(
            f"{meta_path!r} not found: {path!r} is not a complete dataset (build one with nlr-make-tfrecords)"
        )
    try:
        meta = files.read_json(meta_path)
        label_map_path = os.path.join(path, meta.get("label_map", LABEL_MAP_JSON))
        label_map = files.read_json(label_map_path)
    except (json.JSONDecodeError, *files.file_errors()) as e:
        raise DatasetError(f"cannot read dataset metadata in {path!r}: {e}") from e
    for key in ("num_classes", "multi_label", "splits"):
        if key not in meta:
            raise DatasetError(f"{meta_path!r} lacks the key {key!r}")
    num_classes = int(meta["num_classes"])
    if sorted(label_map, key=int) != [str(i) for i in range(num_classes)]:
        raise DatasetError(
            f"{label_map_path!r} has {len(label_map)} entries but dataset.json says num_classes={num_classes}"
        )
    classes = [ClassInfo(**label_map[str(i)]) for i in range(num_classes)]
    splits = {name: SplitInfo(**s) for name, s in meta["splits"].items()}
    info = DatasetInfo(
        num_classes=num_classes,
        multi_label=bool(meta["multi_label"]),
        splits=splits,
        classes=classes,
        provenance=meta.get("provenance", {}),
        skipped=meta.get("skipped", {"count": 0, "rows": []}),
        path=files.absolute(path),
    )
    if info.feature_dim and info.feature_dtype not in FEATURE_DTYPES:
        raise DatasetError(
            f"{meta_path!r}: feature cache dtype {info.feature_dtype!r} is not one of {', '.join(FEATURE_DTYPES)}"
        )
    if check_files:
        for name, split in splits.items():
            for f in split.files:
                if not files.isfile(os.path.join(path, f)):
                    raise DatasetError(f"split {name!r} of {path!r} is missing its shard {f!r}")
    return info
