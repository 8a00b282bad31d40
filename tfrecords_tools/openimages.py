r"""Open Images v1 (the 2016_08 release), split the way Veit et al. 2017 used it.

Layout under `openimages_dir`, as the three v1 tarballs
(`images_2016_08_v5`, `machine_ann_2016_08_v3`, `human_ann_2016_08_v3`) and
the `openimages/dataset` repository unpack::

    images_2016_08/{train,validation}/images.csv
        ImageID,Subset,OriginalURL,OriginalLandingURL,License,AuthorProfileURL,
        Author,Title[,OriginalSize,OriginalMD5,Thumbnail300KURL]
    machine_ann_2016_08/{train,validation}/labels.csv
        ImageID,Source,LabelName,Confidence   (machine labels, confidence 0..1)
    human_ann_2016_08/validation/labels.csv
        ImageID,Source,LabelName,Confidence   (human verification, 1 or 0)
    dict.csv        no header: "mid","display name"
    classes.txt     optional: the trainable mids, one per line

ImageIDs are 16 hex digits (`000060e3121c7305`), labels are Knowledge Graph
mids (`/m/06ht1`). Only the ImageID column of images.csv is read.

Classes: the mids of `classes_path`; by default the first file found of
`classes.txt` and `labelmap.txt` / `2016_08/labelmap.txt` (the 6012
trainable mids shipped with the v1 Inception model), else every mid of
dict.csv. Names come from dict.csv (the mid where dict.csv lacks one; a
display name shared by several mids gets the mid appended), categories from
the optional CSV `categories_path` of `mid,category` rows (default
"others").

Splits (Veit et al. 2017, Sec. 4.1: the machine labels of the training set
are the noisy labels; a quarter of the human-verified validation set is the
small clean training set; the rest is for evaluation):

- `noisy`: every image of the training set; noisy labels = its machine
  labels with confidence >= `min_confidence`.
- `clean`: a seeded `clean_share` of the validation images; noisy labels as
  above, plus verified_pos (human confidence 1) and verified_neg (human
  confidence 0). Classes no human checked stay unverified.
- `val` / `test`: the other validation images, divided `val_share` /
  `1 - val_share`, with the same labels as `clean`.

The validation split is a seeded permutation of the sorted ImageIDs, so it
does not depend on row order. Labels of mids outside the class list are
dropped and counted; a row naming a mid known neither to dict.csv nor to the
class list, a malformed ImageID or confidence, or a wrong column count is a
bad row. Labels of images that images.csv does not list are ignored and
counted (so a trimmed images.csv converts a subset).

Images: `image_root/<subset>/<ImageID>.jpg` when the folder
`image_root/<subset>` (`train`, `validation`) exists, else
`image_root/<ImageID>.jpg`; `image_root` defaults to `openimages_dir`. A
validation image found not in `validation/` but in `test/` is read there:
from V2 on, the v1 validation set was divided between the two folders.

Open Images V4 to V7 (today's download) are read by `openimages_v4`.

Memory: the labels of one subset are held as a dict of ImageID to class
indices while its images.csv streams; the files need not be sorted.
"""

import collections
import csv
import os
import re
from collections.abc import Iterator
from typing import Optional

from nlr_tf.data import files as fs
from nlr_tf.data.schema import ClassInfo
from tfrecords_tools import inputs
from tfrecords_tools.records import BadRow, ClassIndex, Conversion, ConversionError, Item, Record

SOURCE = "openimages"
IMAGES_CSV = "images_2016_08/{subset}/images.csv"
MACHINE_CSV = "machine_ann_2016_08/{subset}/labels.csv"
HUMAN_CSV = "human_ann_2016_08/validation/labels.csv"
DICT_CSV = "dict.csv"
CLASS_LIST_CANDIDATES = ("classes.txt", "labelmap.txt", "2016_08/labelmap.txt")
IMAGE_COLUMNS = ("ImageID",)
LABEL_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")
_IMAGE_ID = re.compile(r"^[0-9a-f]{16}$")


def convert(
    openimages_dir: str,
    image_root: Optional[str] = None,
    min_confidence: float = 0.5,
    clean_share: float = 0.25,
    val_share: float = 0.5,
    classes_path: Optional[str] = None,
    categories_path: Optional[str] = None,
    seed: int = 0,
) -> Conversion:
    """Converts Open Images v1 CSVs (see the module docstring for the layout).

    Args:
        openimages_dir: str. Folder holding `images_2016_08/`,
            `machine_ann_2016_08/`, `human_ann_2016_08/` and `dict.csv`.
        image_root: str. Folder of the downloaded images. Defaults to
            `openimages_dir`.
        min_confidence: float. Machine labels below it are dropped.
            Defaults to 0.5.
        clean_share: float. Share of the validation images in `clean`.
            Defaults to 0.25 (Veit et al.: a quarter, ~40k images).
        val_share: float. Share of the remaining validation images in
            `val`; the rest go to `test`. Defaults to 0.5.
        classes_path: str. File of class mids, one per line. Defaults to
            the first of `classes.txt`, `labelmap.txt`,
            `2016_08/labelmap.txt` in `openimages_dir`, else all of dict.csv.
        categories_path: str. Optional CSV of `mid,category` rows.
        seed: int. Seed of the validation split. Defaults to 0.

    Returns:
        A multi-label `Conversion`.

    Raises:
        ConversionError: a missing file, a header without a required
            column, a malformed dict.csv, class list or categories file, or
            an option out of range.
    """
    inputs.check_share("min_confidence", min_confidence)
    inputs.check_share("clean_share", clean_share)
    inputs.check_share("val_share", val_share)
    files = _input_files(openimages_dir)
    names = read_dict(files["dict"])
    classes_path = classes_path or _find_class_list(openimages_dir)
    mids = read_class_list(classes_path) if classes_path else list(names)
    categories, unused_categories = read_categories(categories_path, set(mids)) if categories_path else ({}, 0)
    classes = make_classes(mids, names, categories)
    image_root = image_root or openimages_dir
    details = {
        "files": files,
        "image_root": image_root,
        "classes_path": classes_path or files["dict"],
        "categories_path": categories_path,
        "categories_for_unknown_mids": unused_categories,
        "min_confidence": min_confidence,
        "clean_share": clean_share,
        "val_share": val_share,
        "seed": seed,
        "dropped_labels": collections.Counter(),
        "labelled_images_not_in_images_csv": collections.Counter(),
    }
    shares = [
        ("clean", clean_share),
        ("val", (1 - clean_share) * val_share),
        ("test", (1 - clean_share) * (1 - val_share)),
    ]
    known = set(names) | set(mids)
    items = _items(files, ClassIndex(classes), known, image_root, min_confidence, shares, seed, details)
    total = sum(inputs.count_data_lines(files[f"images_{s}"]) for s in ("train", "validation"))
    return Conversion(classes=classes, multi_label=True, items=items, source=SOURCE, total=total, details=details)


# === Metadata files ===
def _input_files(root: str) -> dict[str, str]:
    inputs.require_dir(root, "Open Images folder")
    files = {"dict": os.path.join(root, DICT_CSV), "human_validation": os.path.join(root, HUMAN_CSV)}
    for subset in ("train", "validation"):
        files[f"images_{subset}"] = os.path.join(root, IMAGES_CSV.format(subset=subset))
        files[f"machine_{subset}"] = os.path.join(root, MACHINE_CSV.format(subset=subset))
    for key, path in files.items():
        inputs.require_file(path, f"Open Images file ({key})")
        if key != "dict":
            inputs.read_csv_header(path, IMAGE_COLUMNS if key.startswith("images") else LABEL_COLUMNS)
    return files


def read_dict(path: str) -> dict[str, str]:
    """dict.csv (or a V4+ class-descriptions file): mid -> display name (the first row wins for a repeated mid);
    V7's header row `LabelName,DisplayName` is skipped, not read as a class."""
    names: dict[str, str] = {}
    reader = csv.reader(inputs.text_lines(path))
    for row in reader:
        if not row or (reader.line_num == 1 and [v.strip() for v in row] == ["LabelName", "DisplayName"]):
            continue
        if len(row) != 2 or not row[0].strip():
            raise ConversionError(f'{path}:{reader.line_num}: expected "mid","display name", got {row!r}')
        names.setdefault(row[0].strip(), row[1].strip())
    if not names:
        raise ConversionError(f"{path} lists no class")
    return names


def _find_class_list(root: str) -> Optional[str]:
    for name in CLASS_LIST_CANDIDATES:
        path = os.path.join(root, name)
        if fs.isfile(path):
            return path
    return None


def read_class_list(path: str) -> list[str]:
    inputs.require_file(path, "Open Images class list")
    mids, seen = [], set()
    for lineno, line in enumerate(inputs.text_lines(path), 1):
        mid = line.strip()
        if not mid:
            continue
        if mid in seen:
            raise ConversionError(f"{path}:{lineno}: class {mid!r} is listed twice")
        seen.add(mid)
        mids.append(mid)
    if not mids:
        raise ConversionError(f"class list {path!r} lists no class")
    return mids


def read_categories(path: str, mids: set[str]) -> tuple[dict[str, str], int]:
    """`mid,category` rows (an optional `mid,category` header) -> (mid -> category, rows of other mids)."""
    inputs.require_file(path, "Open Images categories file")
    categories, unused = {}, 0
    reader = csv.reader(inputs.text_lines(path))
    for row in reader:
        row = [v.strip() for v in row]
        if not row or row == ["mid", "category"]:
            continue
        if len(row) != 2 or not all(row):
            raise ConversionError(f"{path}:{reader.line_num}: expected `mid,category`, got {row!r}")
        if row[0] in mids:
            categories[row[0]] = row[1]
        else:
            unused += 1
    return categories, unused


def make_classes(mids: list[str], names: dict[str, str], categories: dict[str, str]) -> list[ClassInfo]:
    display = [names.get(mid, mid) for mid in mids]
    counts = collections.Counter(display)
    return [
        ClassInfo(id=mid, name=name if counts[name] == 1 else f"{name} ({mid})", category=categories.get(mid, "others"))
        for mid, name in zip(mids, display)
    ]


# === Label and image rows ===
def label_rows(path: str, index: ClassIndex, known: set[str]) -> Iterator:
    """Yields `BadRow`s and `(origin, image_id, class index or None, confidence)`.

    The class index is None for a mid outside the class list.
    """
    for item in inputs.csv_rows(path, LABEL_COLUMNS):
        if isinstance(item, BadRow):
            yield item
            continue
        origin, row = item
        image_id, mid = row["ImageID"], row["LabelName"]
        if not _IMAGE_ID.match(image_id):
            yield BadRow(origin, f"malformed ImageID {image_id!r} (expected 16 hex digits)")
            continue
        if mid not in known:
            yield BadRow(origin, f"unknown class id {mid!r} (not in dict.csv nor in the class list)")
            continue
        try:
            confidence = float(row["Confidence"])
        except ValueError:
            confidence = -1.0
        if not 0.0 <= confidence <= 1.0:
            yield BadRow(origin, f"Confidence {row['Confidence']!r} is not a number in [0, 1]")
            continue
        yield origin, image_id, index.get(mid), confidence


def read_machine(path, index, known, min_confidence, table, dropped) -> Iterator[BadRow]:
    """Fills `table` (ImageID -> class indices) from a machine labels.csv."""
    for item in label_rows(path, index, known):
        if isinstance(item, BadRow):
            yield item
            continue
        _, image_id, cls, confidence = item
        if cls is None:
            dropped["machine_outside_classes"] += 1
        elif confidence < min_confidence:
            dropped["machine_below_min_confidence"] += 1
        else:
            table.setdefault(image_id, []).append(cls)


def read_human(path, index, known, table, dropped) -> Iterator[BadRow]:
    """Fills `table` (ImageID -> (verified present, verified absent)) from the human labels.csv."""
    for item in label_rows(path, index, known):
        if isinstance(item, BadRow):
            yield item
            continue
        origin, image_id, cls, confidence = item
        if confidence not in (0.0, 1.0):
            yield BadRow(origin, f"a human label's Confidence must be 0 or 1, got {confidence:g}")
        elif cls is None:
            dropped["human_outside_classes"] += 1
        else:
            table.setdefault(image_id, ([], []))[0 if confidence == 1.0 else 1].append(cls)


def image_rows(path: str) -> Iterator:
    """Yields `BadRow`s and `(origin, ImageID)` from an images.csv."""
    for item in inputs.csv_rows(path, IMAGE_COLUMNS):
        if isinstance(item, BadRow):
            yield item
            continue
        origin, row = item
        if _IMAGE_ID.match(row["ImageID"]):
            yield origin, row["ImageID"]
        else:
            yield BadRow(origin, f"malformed ImageID {row['ImageID']!r} (expected 16 hex digits)")


def image_folder(image_root: str, subset: str) -> str:
    folder = os.path.join(image_root, subset)
    return folder if fs.isdir(folder) else image_root


# === Records ===
def _items(files, index, known, image_root, min_confidence, shares, seed, details) -> Iterator[Item]:
    dropped, orphans = details["dropped_labels"], details["labelled_images_not_in_images_csv"]
    present = inputs.Presence()

    machine: dict[str, list[int]] = {}
    yield from read_machine(files["machine_train"], index, known, min_confidence, machine, dropped)
    folder = image_folder(image_root, "train")
    for item in image_rows(files["images_train"]):
        if isinstance(item, BadRow):
            yield item
            continue
        origin, image_id = item
        noisy = sorted(set(machine.pop(image_id, ())))
        yield Record(
            split="noisy", id=image_id, noisy=noisy, image_path=os.path.join(folder, f"{image_id}.jpg"), origin=origin
        )
    orphans["train"] = len(machine)

    machine, human = {}, {}
    yield from read_machine(files["machine_validation"], index, known, min_confidence, machine, dropped)
    yield from read_human(files["human_validation"], index, known, human, dropped)
    rows = []
    for item in image_rows(files["images_validation"]):
        if isinstance(item, BadRow):
            yield item
        else:
            rows.append(item)
    assignment = inputs.seeded_split((image_id for _, image_id in rows), shares, seed)
    folder = image_folder(image_root, "validation")
    # From V2 on, v1's validation images are divided between validation/ and test/.
    moved = image_folder(image_root, "test") if folder != image_root else folder
    for origin, image_id in rows:
        path = os.path.join(folder, f"{image_id}.jpg")
        if moved != folder and not present(path) and present(os.path.join(moved, f"{image_id}.jpg")):
            path = os.path.join(moved, f"{image_id}.jpg")
        pos, neg = human.pop(image_id, ((), ()))
        yield Record(
            split=assignment[image_id],
            id=image_id,
            noisy=sorted(set(machine.pop(image_id, ()))),
            verified_pos=sorted(set(pos)),
            verified_neg=sorted(set(neg)),
            image_path=path,
            origin=origin,
        )
    orphans["validation"] = len(set(machine) | set(human))
