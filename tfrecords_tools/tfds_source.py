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
  holding noisy labels (e.g. `worse_label` of `cifar10_n`), or a tensor of
  class indices, one per annotator (`annotator_labels` of `imagenet_pi`).
- `verified_neg_key` (optional): classes verified absent (`wrong_multi_labels`
  of `imagenet2012_multilabel`): the verification is then partial, classes
  named by neither key left unverified.
- `clean_flag_key` (optional): a boolean feature saying an image's label is
  verified (`is_clean` of `controlled_noisy_web_labels`): images of the
  `noisy` output split whose flag is set go to the `clean` split instead.

Whether the dataset is multi-label is decided by `label_key` alone (a
Sequence of ClassLabel). On single-label data, a noisy feature holding
several values (annotators) gives the most frequent class (ties: the
smallest index).

Records of the `noisy` split carry noisy labels only: `noisy_label_key` if
given, else `label_key` (a dataset whose labels are themselves noisy).
Records of every other split carry `label_key` as verified labels (present
classes verified present, all others verified absent unless
`verified_neg_key` says which) and, when given, `noisy_label_key` as noisy
labels. A negative value is "no label" (TFDS uses -1 for an unlabelled
example; `cifar10_n` stores -1 as the noisy label of every test image, and
an annotator who gave none): outside the `noisy` split the record keeps no
noisy label, in it (where the noisy label is what it trains on) the record
is a bad row, as is any value above d-1.

A dataset that needs a manual download (CIFAR-N, ImageNet's) is prepared
from the files in `manual_dir`.

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
    manual_dir: Optional[str] = None,
    verified_neg_key: Optional[str] = None,
    clean_flag_key: Optional[str] = None,
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
        manual_dir: str. Where the manually downloaded files are: the
            dataset is prepared from them (if it is not prepared yet).
        verified_neg_key: str. Optional feature of classes verified absent.
        clean_flag_key: str. Optional boolean feature: the image's label is verified.

    Returns:
        A `Conversion`; `multi_label` is True when a label feature is a
        `Sequence(ClassLabel)`.

    Raises:
        ConversionError: an unknown or unprepared dataset, a bad split map
            or split, a missing feature or one of the wrong type.
    """
    import tensorflow_datasets as tfds

    splits = parse_split_map(split_map)
    builder = _builder(tfds, name, data_dir, download, manual_dir)
    features = builder.info.features
    _check_image(tfds, features, image_key, name)
    label_names, multi_label = _label_feature(tfds, features, label_key, name)
    if label_names is None:
        raise ConversionError(f"{name}: {label_key!r} is a Tensor: the classes come from a ClassLabel feature")
    for key in (noisy_label_key, verified_neg_key):
        names = _label_feature(tfds, features, key, name)[0] if key else label_names
        if names is not None and names != label_names:
            raise ConversionError(f"{name}: {key!r} and {label_key!r} have different classes")
    if clean_flag_key and not np.dtype(_feature(features, clean_flag_key, name).np_dtype) == np.bool_:
        raise ConversionError(f"{name}: {clean_flag_key!r} is not a boolean feature (the clean flag)")
    if clean_flag_key and "clean" in dict(splits):
        raise ConversionError(
            f"{name}: with {clean_flag_key!r} the clean split is made from the flagged noisy images: "
            "leave clean out of split_map"
        )
    keys = {
        "image": image_key,
        "label": label_key,
        "noisy": noisy_label_key,
        "neg": verified_neg_key,
        "clean_flag": clean_flag_key,
        "multi_label": multi_label,
    }
    datasets = {out: _open_split(tfds, builder, name, spec, keys) for out, spec in splits}
    classes = [ClassInfo(id=n, name=n) for n in label_names]
    details = {
        "name": name,
        "data_dir": data_dir,
        "split_map": dict(splits),
        "image_key": image_key,
        "label_key": label_key,
        "noisy_label_key": noisy_label_key,
        "verified_neg_key": verified_neg_key,
        "clean_flag_key": clean_flag_key,
        "manual_dir": manual_dir,
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
def _builder(tfds, name: str, data_dir: Optional[str], download: bool, manual_dir: Optional[str] = None):
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConversionError(
            f"tensorflow-datasets has no dataset {name!r} (nor is one prepared in {data_dir!r})"
        ) from None
    except ValueError as e:
        raise ConversionError(f"cannot load the TFDS dataset {name!r}: {str(e).splitlines()[0]}") from None
    if download or manual_dir:
        config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
        try:
            builder.download_and_prepare(download_config=config)
        except Exception as e:  # network, manual-download and disk errors all mean the same to the user
            where = f" from the files in {manual_dir!r}" if manual_dir else ""
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConversionError(f"cannot prepare the TFDS dataset {name!r}{where}: {first}") from e
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


def _label_feature(tfds, features, key: str, name: str) -> tuple[Optional[list[str]], bool]:
    """(class names, holds several values) of a ClassLabel or Sequence(ClassLabel) feature, or (None, ...) of a
    Tensor of integer class indices (annotators' labels)."""
    feature = _feature(features, key, name)
    sequence = isinstance(feature, tfds.features.Sequence)
    inner = feature.feature if sequence else feature
    if isinstance(inner, tfds.features.ClassLabel):
        return list(inner.names), sequence
    if isinstance(feature, tfds.features.Tensor) and np.issubdtype(np.dtype(feature.np_dtype), np.integer):
        return None, len(feature.shape) > 0
    raise ConversionError(
        f"{name}: feature {key!r} is a {type(feature).__name__}, not a ClassLabel, a Sequence of ClassLabel or "
        "a Tensor of class indices"
    )


def _open_split(tfds, builder, name: str, spec: str, keys: dict[str, Optional[str]]):
    """The examples of `spec`, reading only the used features and leaving the image encoded."""
    used = [keys[k] for k in ("image", "label", "noisy", "neg", "clean_flag") if keys.get(k)]
    decoders = tfds.decode.PartialDecoding(
        {key: True for key in used}, decoders={keys["image"]: tfds.decode.SkipDecoding()}
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


def _noisy_indices(value: Any, multi_label: bool) -> list[int]:
    """The noisy labels of one example: negative values (no label) dropped; on single-label data, of several
    values (annotators) the most frequent (ties: the smallest index)."""
    values = [int(v) for v in np.atleast_1d(value) if int(v) >= 0]
    if multi_label or len(values) <= 1:
        return sorted(set(values))
    counts = np.bincount(values)
    return [int(np.argmax(counts))]


def _items(tfds, name, splits, datasets, keys, num_classes) -> Iterator[Item]:
    for out, spec in splits:
        for index, example in enumerate(tfds.as_numpy(datasets[out])):
            split = "clean" if out == "noisy" and keys["clean_flag"] and bool(example[keys["clean_flag"]]) else out
            origin = f"tfds:{name}/{spec}:{index}"
            yield _record(example, split, out == "noisy", origin, f"{spec}/{index}", keys, num_classes)


def _record(
    example: dict[str, Any], split: str, web: bool, origin: str, fallback_id: str, keys, num_classes: int
) -> Item:
    """The record of one example, or a `BadRow` when a label it needs is not a class index.

    `web`: the example comes from the `noisy` output split (its label is a noisy label unless
    `noisy_label_key` names another; the clean flag may have moved it to `clean`)."""
    noisy_key = keys["noisy"] or (keys["label"] if web else None)
    lists = {"noisy": _noisy_indices(example[noisy_key], keys["multi_label"]) if noisy_key else []}
    checked = {"noisy": noisy_key}
    if split == "noisy":
        if not lists["noisy"]:
            value = np.atleast_1d(example[noisy_key]).tolist()
            return BadRow(origin, f"{noisy_key} {value} names no class: the noisy split needs a noisy label")
    else:
        lists["verified_pos"] = _class_indices(example[keys["label"]])
        checked["verified_pos"] = keys["label"]
        if keys["neg"]:
            lists["verified_neg"] = [v for v in _class_indices(example[keys["neg"]]) if v >= 0]
            checked["verified_neg"] = keys["neg"]
    for field, key in checked.items():
        bad = [v for v in lists[field] if not 0 <= v < num_classes]
        if bad:
            return BadRow(origin, f"{key} {bad[0]} is not a class index 0..{num_classes - 1} (an unlabelled example?)")
    if "verified_pos" in lists and "verified_neg" not in lists:
        lists["verified_neg"] = complement(lists["verified_pos"], num_classes)
    tfds_id = example.get("tfds_id")
    return Record(
        split=split,
        id=tfds_id.decode("utf-8") if tfds_id is not None else fallback_id,
        image_bytes=example[keys["image"]],
        origin=origin,
        **lists,
    )
