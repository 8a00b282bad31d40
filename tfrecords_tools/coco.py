r"""MS COCO 2014 with noisy labels from an automatic annotator (Hu et al. 2019).

Hu et al. 2019 compiled a noisy multi-label COCO set: the clean labels are
the COCO categories present in an image, mapped to their target classes;
the noisy labels are the top predictions of an ImageNet classifier mapped to
the same classes; images left without any label are removed.

Inputs:

- `instances_train2014.json` / `instances_val2014.json`, the COCO instances
  layout: `images` [{id, file_name, ...}], `annotations`
  [{image_id, category_id, ...}], `categories` [{id, name, supercategory}].
  Every annotation (crowd ones too) marks its category present.
- `class_map` (optional): CSV with the header
  `coco_category_name,target_class`; each row maps a COCO category to a
  target class (several categories may share one). The target classes, in
  order of first appearance, are the classes; a class's category is the
  COCO supercategory of its first row. COCO categories the map leaves out
  are ignored. Without a map, the 80 COCO categories (by id) are the classes.
- `predictions`: the annotator's predictions, either
  CSV (`.csv`) with the header `image_id,label,score`, one row per
  prediction, or JSONL (`.jsonl`/`.json`), one object per line:
  `{"image_id": ..., "predictions": [[label, score], ...]}`.
  `image_id` is the COCO numeric id or the file name (e.g.
  `COCO_train2014_000000000009.jpg`). The `top_k` highest scores of each
  image are kept (ties: the earlier one), then mapped.
- `annotator_map` (optional): CSV with the header
  `annotator_label,target_class` mapping annotator labels (e.g. ImageNet
  synsets) to target classes; labels it leaves out are dropped (counted).
  Without a map, a label must equal a target class name or it is dropped.

Splits:

- `noisy`: every kept train2014 image, noisy labels only.
- `clean`: a seeded `clean_fraction` of the same training images, with
  noisy labels and fully verified labels (the mapped COCO categories
  present; every other class verified absent).
- `val` / `test`: the kept val2014 images, halved by a seeded permutation;
  fully verified and noisy labels.

Images are read from `image_root/<folder>/<file_name>`, where `<folder>` is
the `X` of `instances_X.json` (`train2014`, `val2014`) and `image_root`
defaults to the folder above the instances file's folder (the official
`annotations/` + `train2014/` + `val2014/` unzip layout). Ids are the COCO
file names.

A malformed image entry, an annotation naming an unknown image or category,
and a prediction row that is malformed or names an unknown image are bad
rows; a bad map file or instances file is a `ConversionError`.
"""

import collections
import heapq
import itertools
import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any, Optional

from nlr_tf.data import files
from nlr_tf.data.schema import ClassInfo
from tfrecords_tools import inputs
from tfrecords_tools.records import BadRow, ClassIndex, Conversion, ConversionError, Item, Record, complement

SOURCE = "coco"
CLASS_MAP_COLUMNS = ("coco_category_name", "target_class")
ANNOTATOR_MAP_COLUMNS = ("annotator_label", "target_class")
PREDICTION_COLUMNS = ("image_id", "label", "score")
_INSTANCES_NAME = re.compile(r"^instances_(?P<folder>.+)\.json$")
_INTEGER = re.compile(r"^\s*-?[0-9]+\s*$")


class _Image:
    """One COCO image: where it came from and its labels."""

    __slots__ = ("origin", "coco_id", "file_name", "folder", "clean", "predictions")

    def __init__(self, origin: str, coco_id: int, file_name: str, folder: str):
        self.origin, self.coco_id, self.file_name, self.folder = origin, coco_id, file_name, folder
        self.clean: set[int] = set()
        self.predictions: list[tuple[float, int, str]] = []  # a min-heap of (score, -order, label)


def convert(
    instances_train: str,
    instances_val: str,
    predictions: str,
    image_root: Optional[str] = None,
    class_map: Optional[str] = None,
    annotator_map: Optional[str] = None,
    top_k: int = 8,
    clean_fraction: float = 0.1,
    seed: int = 0,
    encoding: str = inputs.DEFAULT_ENCODING,
) -> Conversion:
    """Converts COCO 2014 instances plus annotator predictions.

    Args:
        instances_train: str. `instances_train2014.json`.
        instances_val: str. `instances_val2014.json`.
        predictions: str. Annotator predictions, `.csv` or `.jsonl`.
        image_root: str. Folder holding `train2014/` and `val2014/`.
            Defaults to the parent of the instances file's folder.
        class_map: str. Optional `coco_category_name,target_class` CSV.
        annotator_map: str. Optional `annotator_label,target_class` CSV.
        top_k: int. Predictions kept per image. Defaults to 8.
        clean_fraction: float. Share of training images also written to
            `clean` with verified labels. Defaults to 0.1.
        seed: int. Seed of the clean subset and of the val/test halves.
            Defaults to 0.
        encoding: str. The encoding of every input text file (the JSON
            files, the predictions, the maps). Defaults to UTF-8 (with or
            without a byte-order mark).

    Returns:
        A multi-label `Conversion`.

    Raises:
        ConversionError: a missing or malformed instances or map file, or
            an option out of range.
    """
    inputs.check_share("clean_fraction", clean_fraction)
    if top_k < 1:
        raise ConversionError(f"top_k must be >= 1, got {top_k}")
    train, val = _load_instances(instances_train, encoding), _load_instances(instances_val, encoding)
    categories = _categories(instances_train, train, instances_val, val)
    classes, category_classes = (
        _read_class_map(class_map, categories, encoding) if class_map else _identity_classes(categories)
    )
    index = ClassIndex(classes)
    label_classes = _read_annotator_map(annotator_map, index, encoding) if annotator_map else None
    image_root = image_root or os.path.dirname(os.path.dirname(files.absolute(instances_train)))
    bad: list[BadRow] = []
    subsets = {
        subset: _read_images(path, data, category_classes, set(categories), bad)
        for subset, path, data in (("train", instances_train, train), ("val", instances_val, val))
    }
    by_id = {im.coco_id: im for images in subsets.values() for im in images}
    by_name = {im.file_name: im for im in by_id.values()}
    _read_predictions(predictions, by_id, by_name, top_k, bad, encoding)
    counts = collections.Counter()
    train_kept = _labelled(subsets["train"], index, label_classes, counts, "train")
    val_kept = _labelled(subsets["val"], index, label_classes, counts, "val")
    items: list[Item] = list(bad)
    items += _train_records(train_kept, image_root, len(classes), clean_fraction, seed)
    items += _val_records(val_kept, image_root, len(classes), seed)
    details = {
        "instances_train": instances_train,
        "instances_val": instances_val,
        "predictions": predictions,
        "class_map": class_map,
        "annotator_map": annotator_map,
        "image_root": image_root,
        "top_k": top_k,
        "clean_fraction": clean_fraction,
        "seed": seed,
        "counts": dict(counts),
    }
    return Conversion(classes=classes, multi_label=True, items=items, source=SOURCE, total=len(items), details=details)


# === Instances and class maps ===
def _load_instances(path: str, encoding: str) -> dict[str, Any]:
    inputs.require_file(path, "COCO instances file")
    try:
        data = json.loads("".join(inputs.text_lines(path, encoding)))
    except ConversionError:  # a byte the encoding does not allow, already named by line and offset
        raise
    except (OSError, ValueError) as e:
        raise ConversionError(f"cannot read COCO instances file {path!r}: {e}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ConversionError(f"{path}: lacks the list {key!r} of the COCO instances layout")
    return data


def _categories(train_path, train, val_path, val) -> dict[int, dict[str, str]]:
    """COCO category id -> {name, supercategory}; both files must agree."""
    found = []
    for path, data in ((train_path, train), (val_path, val)):
        try:
            found.append(
                {
                    int(c["id"]): {"name": str(c["name"]), "supercategory": str(c.get("supercategory", "others"))}
                    for c in data["categories"]
                }
            )
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"{path}: every category needs an id and a name") from None
    if {k: v["name"] for k, v in found[0].items()} != {k: v["name"] for k, v in found[1].items()}:
        raise ConversionError(f"{train_path} and {val_path} list different categories")
    if not found[0]:
        raise ConversionError(f"{train_path} lists no category")
    return dict(sorted(found[0].items()))


def _identity_classes(categories) -> tuple[list[ClassInfo], dict[int, list[int]]]:
    classes = [ClassInfo(id=c["name"], name=c["name"], category=c["supercategory"]) for c in categories.values()]
    return classes, {cat_id: [i] for i, cat_id in enumerate(categories)}


def _read_class_map(path: str, categories, encoding: str) -> tuple[list[ClassInfo], dict[int, list[int]]]:
    inputs.require_file(path, "COCO class map")
    by_name = {c["name"]: cat_id for cat_id, c in categories.items()}
    classes: list[ClassInfo] = []
    positions: dict[str, int] = {}
    category_classes: dict[int, list[int]] = collections.defaultdict(list)
    for item in inputs.csv_rows(path, CLASS_MAP_COLUMNS, encoding):
        if isinstance(item, BadRow):
            raise ConversionError(item.message())
        origin, row = item
        name, target = row["coco_category_name"], row["target_class"]
        if name not in by_name:
            raise ConversionError(f"{origin}: {name!r} is not a COCO category")
        if not target:
            raise ConversionError(f"{origin}: empty target_class")
        if target not in positions:
            positions[target] = len(classes)
            classes.append(ClassInfo(id=target, name=target, category=categories[by_name[name]]["supercategory"]))
        category_classes[by_name[name]].append(positions[target])
    if not classes:
        raise ConversionError(f"class map {path!r} maps no category")
    return classes, dict(category_classes)


def _read_annotator_map(path: str, index: ClassIndex, encoding: str) -> dict[str, list[int]]:
    inputs.require_file(path, "annotator class map")
    label_classes: dict[str, list[int]] = collections.defaultdict(list)
    for item in inputs.csv_rows(path, ANNOTATOR_MAP_COLUMNS, encoding):
        if isinstance(item, BadRow):
            raise ConversionError(item.message())
        origin, row = item
        target = index.get(row["target_class"])
        if target is None:
            raise ConversionError(f"{origin}: target_class {row['target_class']!r} is not one of the classes")
        label_classes[row["annotator_label"]].append(target)
    return dict(label_classes)


# === Images, annotations, predictions ===
def _read_images(path: str, data, category_classes, known_categories, bad: list[BadRow]) -> list[_Image]:
    match = _INSTANCES_NAME.match(os.path.basename(path))
    folder = match.group("folder") if match else os.path.splitext(os.path.basename(path))[0]
    images: dict[int, _Image] = {}
    for i, entry in enumerate(data["images"]):
        origin = f"{path}:images[{i}]"
        try:
            image = _Image(origin, _integer(entry, "id"), _file_name(entry), folder)
        except ValueError as e:
            bad.append(BadRow(origin, f"an image needs an integer id and a file_name: {e}"))
            continue
        if image.coco_id in images:
            bad.append(BadRow(origin, f"image id {image.coco_id} is listed twice"))
            continue
        images[image.coco_id] = image
    for i, ann in enumerate(data["annotations"]):
        origin = f"{path}:annotations[{i}]"
        try:
            image_id, category_id = _integer(ann, "image_id"), _integer(ann, "category_id")
        except ValueError as e:
            bad.append(BadRow(origin, f"an annotation needs an integer image_id and category_id: {e}"))
            continue
        if image_id not in images:
            bad.append(BadRow(origin, f"unknown image_id {image_id}"))
        elif category_id not in known_categories:
            bad.append(BadRow(origin, f"unknown category_id {category_id}"))
        else:
            images[image_id].clean.update(category_classes.get(category_id, ()))
    return list(images.values())


def _integer(entry: Any, key: str) -> int:
    """`entry[key]` as an id: an int, or a string or float holding a whole number.

    Raises:
        ValueError: `entry` is no JSON object, or its `key` is missing or no whole number (a bool, a
            fraction, a word, null), named in one line.
    """
    value = _value(entry, key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    raise ValueError(f"{key} {value!r} is not an integer")


def _file_name(entry: Any) -> str:
    value = _value(entry, "file_name")
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"file_name {value!r} is not a file name")
    return value


def _value(entry: Any, key: str) -> Any:
    if not isinstance(entry, dict):
        raise ValueError(f"expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise ValueError(f"no {key!r}")
    return entry[key]


def _prediction_rows(path: str, encoding: str) -> Iterator:
    """Yields `BadRow`s and `(origin, image_id, label, score)`."""
    if path.endswith(".csv"):
        for item in inputs.csv_rows(path, PREDICTION_COLUMNS, encoding):
            if isinstance(item, BadRow):
                yield item
            else:
                origin, row = item
                yield origin, row["image_id"], row["label"], row["score"]
        return
    for lineno, line in enumerate(inputs.text_lines(path, encoding), 1):
        if not line.strip():
            continue
        origin = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
            pairs = [(str(label), score) for label, score in obj["predictions"]]
            image_id = obj["image_id"]
        except (ValueError, KeyError, TypeError) as e:
            yield BadRow(origin, f'expected {{"image_id": ..., "predictions": [[label, score], ...]}}: {e}')
            continue
        for label, score in pairs:
            yield origin, image_id, label, score


def _read_predictions(path, by_id, by_name, top_k, bad: list[BadRow], encoding: str) -> None:
    """Keeps the `top_k` best predictions of each image in `image.predictions`."""
    inputs.require_file(path, "annotator predictions file")
    if not path.endswith((".csv", ".jsonl", ".json")):
        raise ConversionError(f"predictions file {path!r} must end in .csv or .jsonl")
    order = itertools.count()
    for item in _prediction_rows(path, encoding):
        if isinstance(item, BadRow):
            bad.append(item)
            continue
        origin, image_id, label, raw_score = item
        image = _resolve_image(image_id, by_id, by_name)
        try:
            score = float(raw_score)
        except (TypeError, ValueError):
            score = math.nan
        if image is None:
            bad.append(BadRow(origin, f"unknown image_id {image_id!r} (not a COCO id or file name)"))
        elif not label or math.isnan(score):
            bad.append(BadRow(origin, f"a prediction needs a label and a numeric score, got {label!r}, {raw_score!r}"))
        else:
            heapq.heappush(image.predictions, (score, -next(order), label))
            if len(image.predictions) > top_k:
                heapq.heappop(image.predictions)


def _resolve_image(image_id, by_id, by_name) -> Optional[_Image]:
    text = str(image_id).strip()
    if text.isdigit():
        return by_id.get(int(text))
    return by_name.get(os.path.basename(text))


# === Records ===
def _labelled(images, index, label_classes, counts, subset) -> list[tuple[_Image, list[int], list[int]]]:
    """(image, clean, noisy) of the images holding a label; counts the rest."""
    kept = []
    for image in images:
        noisy: set[int] = set()
        for _, _, label in image.predictions:
            targets = label_classes.get(label) if label_classes is not None else _as_list(index.get(label))
            if targets:
                noisy.update(targets)
            else:
                counts["predictions_outside_classes"] += 1
        if image.clean or noisy:
            kept.append((image, sorted(image.clean), sorted(noisy)))
        else:
            counts[f"{subset}_images_without_labels_removed"] += 1
    counts[f"{subset}_images_kept"] = len(kept)
    return kept


def _as_list(value: Optional[int]) -> list[int]:
    return [] if value is None else [value]


def _record(split: str, image: _Image, image_root: str, noisy, verified_pos=(), verified_neg=()) -> Record:
    return Record(
        split=split,
        id=image.file_name,
        noisy=noisy,
        verified_pos=verified_pos,
        verified_neg=verified_neg,
        image_path=os.path.join(image_root, image.folder, image.file_name),
        origin=image.origin,
    )


def _train_records(kept, image_root, num_classes, clean_fraction, seed) -> list[Record]:
    names = [image.file_name for image, _, _ in kept]
    assignment = inputs.seeded_split(names, [("clean", clean_fraction), ("rest", 1 - clean_fraction)], seed)
    records = []
    for image, clean, noisy in kept:
        records.append(_record("noisy", image, image_root, noisy))
        if assignment[image.file_name] == "clean":
            records.append(_record("clean", image, image_root, noisy, clean, complement(clean, num_classes)))
    return records


def _val_records(kept, image_root, num_classes, seed) -> list[Record]:
    names = [image.file_name for image, _, _ in kept]
    assignment = inputs.seeded_split(names, [("val", 0.5), ("test", 0.5)], seed)
    return [
        _record(assignment[image.file_name], image, image_root, noisy, clean, complement(clean, num_classes))
        for image, clean, noisy in kept
    ]
