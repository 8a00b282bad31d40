r"""Any tensorflow-datasets (TFDS) dataset, by name.

The dataset must already be prepared in `data_dir` (`tfds build NAME
--data_dir=...`, or `tfds.builder(NAME).download_and_prepare()`); nothing is
downloaded unless `download=True`.

`split_map` names the output splits and the TFDS split (with TFDS slicing)
each is read from, e.g. `noisy=train[:90%],clean=train[90%:],val=validation,
test=test`. The features used:

- `image_key`: an `Image` feature. Its stored PNG/JPEG bytes are written as
  they are (not decoded and re-encoded); features not named here are not
  read.
- `label_key`: a `ClassLabel` (single-label) or a `Sequence(ClassLabel)`
  (multi-label); it gives the classes (names from the `ClassLabel`).
- `noisy_label_key` (optional): a second label feature over the same classes
  holding noisy labels (e.g. `worse_label` of `cifar10_n`).

Records of the `noisy` split carry noisy labels only: `noisy_label_key` if
given, else `label_key` (a dataset whose labels are themselves noisy).
Records of every other split carry `label_key` as fully verified labels
(present classes verified present, all others verified absent) and, when
given, `noisy_label_key` as noisy labels. A label outside 0..d-1 (TFDS uses
-1 for an unlabelled example) is a bad row.

Ids are the TFDS `tfds_id` (file and position, stable across split slicing),
or `<tfds split>/<index>` when the reader provides none.
"""

import re
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np

from nlr_tf.data.schema import ClassInfo
from tfrecords_tools.records import BadRow, Conversion, ConversionError, Item, Record, complement

SOURCE = "tfds"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def parse_split_map(split_map: str) -> list[tuple[str, str]]:
    """Parses `out=tfds_split,...` into (output split, TFDS split) pairs.

    Raises:
        ConversionError: an empty or malformed entry, a bad or repeated
            output split name.
    """
    pairs: list[tuple[str, str]] = []
    for part in (split_map or "").split(","):
        out, sep, spec = (s.strip() for s in part.partition("="))
        if not sep or not out or not spec:
            raise ConversionError(
                f"split_map entries look like `noisy=train[:90%]`, got {part.strip()!r} in {split_map!r}"
            )
        if not _SPLIT_NAME.match(out):
            raise ConversionError(f"output split name {out!r} may hold only letters, digits and _")
        if out in dict(pairs):
            raise ConversionError(f"output split {out!r} appears twice in split_map {split_map!r}")
        pairs.append((out, spec))
    return pairs


def convert(
    name: str,
    split_map: str,
    data_dir: Optional[str] = None,
    image_key: str = "image",
    label_key: str = "label",
    noisy_label_key: Optional[str] = None,
    download: bool = False,
) -> Conversion:
    """Converts a prepared TFDS dataset (see the module docstring).

    Args:
        name: str. TFDS name, optionally with config and version
            (`cifar10`, `voc/2007`, `mnist:3.0.1`).
        split_map: str. `out=tfds_split` pairs separated by commas.
        data_dir: str. TFDS data folder. Defaults to the TFDS default.
        image_key: str. The image feature. Defaults to "image".
        label_key: str. The (clean) label feature. Defaults to "label".
        noisy_label_key: str. Optional feature of noisy labels.
        download: bool. Download and prepare the dataset first. Defaults to
            False.

    Returns:
        A `Conversion`; `multi_label` is True when a label feature is a
        `Sequence(ClassLabel)`.

    Raises:
        ConversionError: an unknown or unprepared dataset, a bad split map
            or split, a missing feature or one of the wrong type.
    """
    import tensorflow_datasets as tfds

    splits = parse_split_map(split_map)
    builder = _builder(tfds, name, data_dir, download)
    features = builder.info.features
    _check_image(tfds, features, image_key, name)
    label_names, label_sequence = _label_feature(tfds, features, label_key, name)
    multi_label = label_sequence
    if noisy_label_key:
        noisy_names, noisy_sequence = _label_feature(tfds, features, noisy_label_key, name)
        if noisy_names != label_names:
            raise ConversionError(f"{name}: {noisy_label_key!r} and {label_key!r} have different classes")
        multi_label = multi_label or noisy_sequence
    keys = {"image": image_key, "label": label_key, "noisy": noisy_label_key}
    datasets = {out: _open_split(tfds, builder, name, spec, keys) for out, spec in splits}
    classes = [ClassInfo(id=n, name=n) for n in label_names]
    details = {
        "name": name,
        "data_dir": data_dir,
        "split_map": dict(splits),
        "image_key": image_key,
        "label_key": label_key,
        "noisy_label_key": noisy_label_key,
        "version": str(builder.info.version),
    }
    return Conversion(
        classes=classes,
        multi_label=multi_label,
        items=_items(tfds, name, splits, datasets, keys, len(classes)),
        source=SOURCE,
        total=_total(builder, splits),
        details=details,
    )


# === Builder, features, splits ===
def _builder(tfds, name: str, data_dir: Optional[str], download: bool):
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConversionError(
            f"tensorflow-datasets has no dataset {name!r} (nor is one prepared in {data_dir!r})"
        ) from None
    except ValueError as e:
        raise ConversionError(f"cannot load the TFDS dataset {name!r}: {str(e).splitlines()[0]}") from None
    if download:
        try:
            builder.download_and_prepare()
        except Exception as e:  # network, manual-download and disk errors all mean the same to the user
            raise ConversionError(f"cannot download and prepare the TFDS dataset {name!r}: {e}") from e
    return builder


def _feature(features, key: str, name: str):
    if key not in features:
        raise ConversionError(f"{name} has no feature {key!r}; it has: {', '.join(sorted(features.keys()))}")
    return features[key]


def _check_image(tfds, features, key: str, name: str) -> None:
    feature = _feature(features, key, name)
    if not isinstance(feature, tfds.features.Image):
        raise ConversionError(f"{name}: feature {key!r} is a {type(feature).__name__}, not an Image")
    if np.dtype(feature.np_dtype) not in (np.uint8, np.uint16):
        raise ConversionError(f"{name}: image feature {key!r} holds {np.dtype(feature.np_dtype)} pixels, not uint8")


def _label_feature(tfds, features, key: str, name: str) -> tuple[list[str], bool]:
    """(class names, is a sequence) of a ClassLabel or Sequence(ClassLabel) feature."""
    feature = _feature(features, key, name)
    sequence = isinstance(feature, tfds.features.Sequence)
    inner = feature.feature if sequence else feature
    if not isinstance(inner, tfds.features.ClassLabel):
        raise ConversionError(
            f"{name}: feature {key!r} is a {type(feature).__name__}, not a ClassLabel or a Sequence of ClassLabel"
        )
    return list(inner.names), sequence


def _open_split(tfds, builder, name: str, spec: str, keys: dict[str, Optional[str]]):
    """The examples of `spec`, reading only the used features and leaving the image encoded."""
    decoders = tfds.decode.PartialDecoding(
        {key: True for key in keys.values() if key}, decoders={keys["image"]: tfds.decode.SkipDecoding()}
    )
    try:
        return builder.as_dataset(
            split=spec, shuffle_files=False, decoders=decoders, read_config=tfds.ReadConfig(add_tfds_id=True)
        )
    except AssertionError:
        raise ConversionError(
            f"the TFDS dataset {name!r} is not prepared in {builder.data_dir_root!s}: prepare it first "
            f"(`tfds build {name} --data_dir=...`) or ask for a download (--tfds_download)"
        ) from None
    except (ValueError, KeyError) as e:
        raise ConversionError(f"{name}: bad split {spec!r}: {str(e).splitlines()[0]}") from None


def _total(builder, splits) -> Optional[int]:
    try:
        return sum(builder.info.splits[spec].num_examples for _, spec in splits)
    except (KeyError, ValueError):
        return None


# === Records ===
def _class_indices(value: Any) -> list[int]:
    return sorted({int(v) for v in np.atleast_1d(value)})


def _items(tfds, name, splits, datasets, keys, num_classes) -> Iterator[Item]:
    for out, spec in splits:
        for index, example in enumerate(tfds.as_numpy(datasets[out])):
            yield _record(example, out, f"tfds:{name}/{spec}:{index}", f"{spec}/{index}", keys, num_classes)


def _record(example: dict[str, Any], split: str, origin: str, fallback_id: str, keys, num_classes: int) -> Item:
    """The record of one example, or a `BadRow` when a label it needs is not a class index."""
    if split == "noisy":
        sources = {"noisy": keys["noisy"] or keys["label"]}
    else:
        sources = {"verified_pos": keys["label"], "noisy": keys["noisy"]}
    lists = {field: _class_indices(example[key]) if key else [] for field, key in sources.items()}
    for field, key in sources.items():
        bad = [v for v in lists[field] if not 0 <= v < num_classes]
        if bad:
            return BadRow(origin, f"{key} {bad[0]} is not a class index 0..{num_classes - 1} (an unlabelled example?)")
    if "verified_pos" in lists:
        lists["verified_neg"] = complement(lists["verified_pos"], num_classes)
    tfds_id = example.get("tfds_id")
    return Record(
        split=split,
        id=tfds_id.decode("utf-8") if tfds_id is not None else fallback_id,
        image_bytes=example[keys["image"]],
        origin=origin,
        **lists,
    )
