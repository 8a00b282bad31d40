r"""Open Images V4 to V7, as downloaded today (image-level labels).

Files under `openimages_dir`, with or without a release prefix (`oidv6-`,
`oidv7-`), as the download pages name them::

    {train,validation|val,test}-annotations-human-imagelabels.csv
        ImageID,Source,LabelName,Confidence   (human verification, 1 or 0)
    {train,validation|val,test}-annotations-machine-imagelabels.csv
        ImageID,Source,LabelName,Confidence   (machine labels, confidence 0..1)
    class-descriptions.csv     "mid","display name" (V7: a header row LabelName,DisplayName)
    classes-trainable.txt      optional: the trainable mids, one per line
    {train,validation|val,test}-images*.csv   optional image lists (ImageID, ..., Rotation)

The `-boxable` variants are read when the full files are absent. Only the
ImageID column of an image list is read; without one, a split's images are
those its label files name. Rotation is not applied: an image is read as
stored.

Classes: the mids of `classes_path`; by default `classes-trainable.txt`
(9,605 mids in V7) if present, else every mid of the class descriptions.

Splits: `noisy` holds the training images with their machine labels of
confidence >= `min_confidence`. The clean set comes from
`clean_from`:

- "validation" (as Veit et al. used v1): a seeded `clean_share` of the
  validation images, with their human-verified labels; the other validation
  images are `val`;
- "train": a seeded `clean_share` of the training images that have
  human-verified labels (from V4 on, train has them too); `val` is the whole
  validation split.

`test` is the test split, human-verified. Every image of `clean`, `val` and
`test` also keeps its machine labels as noisy labels. Classes no human
checked stay unverified.

Images: `image_root/<train|validation|test>/<ImageID>.jpg` when the folder
exists, else `image_root/<ImageID>.jpg`. With `present_only`, an image
absent from disk is left out and counted per split, with the labels it
takes with it (`details["absent_images"]`, `details["labels_lost"]`), rather
than listed as a bad row each.
"""

import collections
import os
import re
from collections.abc import Iterator
from typing import Optional

from nlr_tf.data import files as fs
from tfrecords_tools import inputs
from tfrecords_tools.openimages import (
    image_folder,
    image_rows,
    make_classes,
    read_categories,
    read_class_list,
    read_dict,
    read_human,
    read_machine,
)
from tfrecords_tools.records import BadRow, ClassIndex, Conversion, ConversionError, Item, Record

SOURCE = "openimages"
SPLITS = ("train", "validation", "test")
_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
_LABELS = re.compile(
    r"^(?:oidv\d+-)?(train|validation|val|test)-annotations-(human|machine)-imagelabels(-boxable)?\.csv$"
)
_IMAGES = re.compile(r"^(?:oidv\d+-)?(train|validation|val|test)-images[a-z0-9-]*\.csv$")
_CLASSES = re.compile(r"^(?:oidv\d+-)?class-descriptions(-boxable)?\.csv$")
_TRAINABLE = re.compile(r"^(?:oidv\d+-)?classes-trainable\.txt$")
CLEAN_FROM = ("validation", "train")


def detect(root: str) -> Optional[str]:
    """"v1" for the 2016 layout, "v4+" for today's files, None for neither."""
    if fs.isdir(os.path.join(root, "images_2016_08")):
        return "v1"
    if fs.isdir(root) and any(_LABELS.match(name) for name in fs.listdir(root)):
        return "v4+"
    return None


def find_files(root: str) -> dict[str, str]:
    """The V4+ files present under `root`: `human_<split>`, `machine_<split>`, `images_<split>`, `classes`,
    `trainable` (the full files before the `-boxable` ones)."""
    inputs.require_dir(root, "Open Images folder")
    found: dict[str, tuple[bool, str]] = {}  # key -> (is a boxable variant, path)

    def offer(key: str, boxable: bool, name: str) -> None:
        if key not in found or (found[key][0] and not boxable):
            found[key] = (boxable, os.path.join(root, name))

    for name in fs.listdir(root):
        if m := _LABELS.match(name):
            offer(f"{m.group(2)}_{_ALIASES[m.group(1)]}", bool(m.group(3)), name)
        elif m := _IMAGES.match(name):
            offer(f"images_{_ALIASES[m.group(1)]}", "boxable" in name, name)
        elif m := _CLASSES.match(name):
            offer("classes", bool(m.group(1)), name)
        elif _TRAINABLE.match(name):
            offer("trainable", False, name)
    return {key: path for key, (_, path) in found.items()}


def convert(
    openimages_dir: str,
    image_root: Optional[str] = None,
    min_confidence: float = 0.5,
    clean_share: float = 0.25,
    clean_from: str = "validation",
    classes_path: Optional[str] = None,
    categories_path: Optional[str] = None,
    seed: int = 0,
    present_only: bool = False,
) -> Conversion:
    """Converts Open Images V4-V7 image-level label files (see the module docstring).

    Args:
        openimages_dir: str. Folder of the CSV files.
        image_root: str. Folder of the images. Defaults to `openimages_dir`.
        min_confidence: float. Machine labels below it are dropped.
        clean_share: float. Share of the `clean_from` images in `clean`.
        clean_from: str. "validation" or "train" (see the module docstring).
        classes_path: str. File of class mids, one per line.
        categories_path: str. Optional CSV of `mid,category` rows.
        seed: int. Seed of the clean share.
        present_only: bool. Leave out (and count) images absent from disk.

    Raises:
        ConversionError: a missing file, a header without a required column,
            a malformed class file, or an option out of range.
    """
    inputs.check_share("min_confidence", min_confidence)
    inputs.check_share("clean_share", clean_share)
    if clean_from not in CLEAN_FROM:
        raise ConversionError(f"clean_from must be one of {', '.join(CLEAN_FROM)}, got {clean_from!r}")
    files = find_files(openimages_dir)
    wanted = ["classes", "machine_train", "human_validation", "human_test"] + (
        ["human_train"] if clean_from == "train" else []
    )
    missing = [key for key in wanted if key not in files]
    if missing:
        raise ConversionError(
            f"{openimages_dir!r} lacks the Open Images V4+ file(s) of {', '.join(missing)} (e.g. "
            "oidv7-train-annotations-machine-imagelabels.csv, oidv7-val-annotations-human-imagelabels.csv, "
            "oidv7-test-annotations-human-imagelabels.csv, oidv7-class-descriptions.csv)"
        )
    for key, path in files.items():
        if key.startswith(("human", "machine")):
            inputs.read_csv_header(path, ("ImageID", "Source", "LabelName", "Confidence"))
        elif key.startswith("images"):
            inputs.read_csv_header(path, ("ImageID",))
    names = read_dict(files["classes"])
    classes_path = classes_path or files.get("trainable")
    mids = read_class_list(classes_path) if classes_path else list(names)
    categories, unused = read_categories(categories_path, set(mids)) if categories_path else ({}, 0)
    classes = make_classes(mids, names, categories)
    image_root = image_root or openimages_dir
    details = {
        "version": "v4+",
        "files": files,
        "image_root": image_root,
        "classes_path": classes_path or files["classes"],
        "categories_path": categories_path,
        "categories_for_unknown_mids": unused,
        "min_confidence": min_confidence,
        "clean_share": clean_share,
        "clean_from": clean_from,
        "seed": seed,
        "present_only": present_only,
        "dropped_labels": collections.Counter(),
        "absent_images": collections.Counter(),
        "labels_lost": collections.Counter(),
    }
    index = ClassIndex(classes)
    known = set(names) | set(mids)
    items = _items(files, index, known, image_root, min_confidence, clean_share, clean_from, seed, details)
    return Conversion(classes=classes, multi_label=True, items=items, source=SOURCE, total=None, details=details)


def _split_images(files, split: str, labelled: set[str]) -> Iterator:
    """`(origin, ImageID)` of a split's images (its image list, else the images its labels name), and `BadRow`s."""
    if f"images_{split}" in files:
        yield from image_rows(files[f"images_{split}"])
    else:
        yield from ((f"{split} labels", image_id) for image_id in sorted(labelled))


def _items(files, index, known, image_root, min_confidence, clean_share, clean_from, seed, details) -> Iterator[Item]:
    dropped = details["dropped_labels"]
    present = inputs.Presence()
    for split in SPLITS:
        machine: dict[str, list[int]] = {}
        human: dict[str, tuple[list[int], list[int]]] = {}
        if f"machine_{split}" in files:
            yield from read_machine(files[f"machine_{split}"], index, known, min_confidence, machine, dropped)
        verified = split != "train" or clean_from == "train"
        if verified and f"human_{split}" in files:
            yield from read_human(files[f"human_{split}"], index, known, human, dropped)
        rows = []
        for item in _split_images(files, split, set(machine) | set(human)):
            if isinstance(item, BadRow):
                yield item
            else:
                rows.append(item)
        # Which images go to `clean`: a seeded share of the clean source's (verified) images.
        clean: set[str] = set()
        if split == clean_from:
            pool = [image_id for _, image_id in rows if split != "train" or image_id in human]
            assignment = inputs.seeded_split(pool, [("clean", clean_share), ("other", 1 - clean_share)], seed)
            clean = {image_id for image_id, name in assignment.items() if name == "clean"}
        default = {"train": "noisy", "validation": "val", "test": "test"}[split]
        folder = image_folder(image_root, split)
        for origin, image_id in rows:
            out = "clean" if image_id in clean else default
            pos, neg = human.get(image_id, ((), ())) if out != "noisy" else ((), ())
            noisy = sorted(set(machine.get(image_id, ())))
            path = os.path.join(folder, f"{image_id}.jpg")
            if details["present_only"] and not present(path):
                details["absent_images"][out] += 1
                details["labels_lost"][out] += len(noisy) + len(set(pos)) + len(set(neg))
                continue
            yield Record(
                split=out,
                id=image_id,
                noisy=noisy,
                verified_pos=sorted(set(pos)),
                verified_neg=sorted(set(neg)),
                image_path=path,
                origin=origin,
            )
