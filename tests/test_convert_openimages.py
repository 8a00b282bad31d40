"""Open Images v1 converter on a tiny copy of the real 2016_08 file layout."""

import csv
import os
import re

import pytest
from cli_util import run_cli
from fault_util import cli_error_line, cut_in_half, fails_in_one_line, nothing_written, skipped_rows, skips
from PIL import Image

from nlr_tf.data.parsing import iterate_label_lists
from tfrecords_tools import openimages
from tfrecords_tools.records import ConversionError
from tfrecords_tools.writer import BadInputError, write_dataset

DICT_ROWS = [
    ("/m/0bt9lr", "dog"),
    ("/m/01yrx", "cat"),
    ("/m/015p6", "bird"),
    ("/m/0k4j", "car"),
    ("/m/013y0j", "organ"),
    ("/m/013y1f", "organ"),
    ("/m/07j7r", "tree"),
]
TRAINABLE = ["/m/0bt9lr", "/m/01yrx", "/m/015p6", "/m/0k4j", "/m/013y0j", "/m/013y1f"]
DOG, CAT, BIRD, CAR, ORGAN_A, ORGAN_B = range(6)
IMAGES_HEADER = [
    "ImageID",
    "Subset",
    "OriginalURL",
    "OriginalLandingURL",
    "License",
    "AuthorProfileURL",
    "Author",
    "Title",
    "OriginalSize",
    "OriginalMD5",
    "Thumbnail300KURL",
]
LABELS_HEADER = ["ImageID", "Source", "LabelName", "Confidence"]
TRAIN = {  # ImageID -> machine labels (mid, confidence)
    "000060e3121c7305": [("/m/0bt9lr", "0.9"), ("/m/01yrx", "0.4"), ("/m/07j7r", "0.8")],
    "000095d8b8d9a0ea": [("/m/0k4j", "0.7"), ("/m/015p6", "0.5")],
    "0000b9f5fb5e4e8d": [("/m/013y1f", "0.6")],
    "0001a4d0b6f0ab6c": [],
}
VALIDATION = {  # ImageID -> (machine labels, human labels (mid, 1|0))
    "000026e7ee790996": ([("/m/0bt9lr", "0.8")], [("/m/0bt9lr", "1"), ("/m/01yrx", "0")]),
    "00003bfccf5f6a53": ([("/m/01yrx", "0.9")], [("/m/01yrx", "0"), ("/m/07j7r", "1")]),
    "000062a39995e348": ([("/m/015p6", "0.6")], [("/m/015p6", "1")]),
    "0000c64e1253d68f": ([("/m/0k4j", "0.55")], [("/m/0k4j", "1"), ("/m/0bt9lr", "0")]),
    "0001eeaf4aed83f9": ([], [("/m/013y0j", "1")]),
    "0002ab0af02e4a77": ([("/m/0bt9lr", "0.3")], []),
    "0003a0e9ee5e4b3a": ([("/m/013y0j", "0.7")], [("/m/013y0j", "0")]),
    "0004f7a4e6a2fa13": ([("/m/01yrx", "0.65"), ("/m/0bt9lr", "0.6")], [("/m/01yrx", "1"), ("/m/0bt9lr", "1")]),
}
EXPECTED_NOISY = {
    "000060e3121c7305": [DOG],
    "000095d8b8d9a0ea": [BIRD, CAR],
    "0000b9f5fb5e4e8d": [ORGAN_B],
    "0001a4d0b6f0ab6c": [],
}
EXPECTED_VALIDATION = {  # ImageID -> (noisy, verified_pos, verified_neg)
    "000026e7ee790996": ([DOG], [DOG], [CAT]),
    "00003bfccf5f6a53": ([CAT], [], [CAT]),
    "000062a39995e348": ([BIRD], [BIRD], []),
    "0000c64e1253d68f": ([CAR], [CAR], [DOG]),
    "0001eeaf4aed83f9": ([], [ORGAN_A], []),
    "0002ab0af02e4a77": ([], [], []),
    "0003a0e9ee5e4b3a": ([ORGAN_A], [], [ORGAN_A]),
    "0004f7a4e6a2fa13": ([DOG, CAT], [DOG, CAT], []),
}


def _write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL if header is None else csv.QUOTE_MINIMAL)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def _image_row(image_id, subset):
    return [
        image_id,
        subset,
        f"https://c1.staticflickr.com/{image_id}_o.jpg",
        f"https://www.flickr.com/photos/x/{image_id}",
        "https://creativecommons.org/licenses/by/2.0/",
        "https://www.flickr.com/people/x/",
        "Author",
        "A title, with a comma",
        "211079",
        "0Sad+xMj2ttXM1U8meEJ0A==",
        "",
    ]


def _label_rows(labels, source):
    return [[image_id, source, mid, conf] for image_id, pairs in labels.items() for mid, conf in pairs]


def make_openimages(root, extra_machine_rows=(), flat_images=False):
    """Writes the v1 layout under `root` (images under root/images) and returns (openimages_dir, image_root)."""
    _write_csv(os.path.join(root, "dict.csv"), None, DICT_ROWS)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.write("\n".join(TRAINABLE) + "\n")
    _write_csv(
        os.path.join(root, "categories.csv"),
        ["mid", "category"],
        [
            ("/m/0bt9lr", "animal"),
            ("/m/01yrx", "animal"),
            ("/m/015p6", "animal"),
            ("/m/0k4j", "vehicle"),
        ],
    )
    for subset, table in (("train", TRAIN), ("validation", VALIDATION)):
        _write_csv(
            os.path.join(root, f"images_2016_08/{subset}/images.csv"),
            IMAGES_HEADER,
            [_image_row(i, subset) for i in table],
        )
        machine = {i: v if subset == "train" else v[0] for i, v in table.items()}
        rows = _label_rows(machine, "machine") + (list(extra_machine_rows) if subset == "train" else [])
        _write_csv(os.path.join(root, f"machine_ann_2016_08/{subset}/labels.csv"), LABELS_HEADER, rows)
    _write_csv(
        os.path.join(root, "human_ann_2016_08/validation/labels.csv"),
        LABELS_HEADER,
        _label_rows({i: v[1] for i, v in VALIDATION.items()}, "human"),
    )
    image_root = os.path.join(root, "images")
    for subset, table in (("train", TRAIN), ("validation", VALIDATION)):
        folder = image_root if flat_images else os.path.join(image_root, subset)
        os.makedirs(folder, exist_ok=True)
        for k, image_id in enumerate(table):
            Image.new("RGB", (8, 6), (30 * k, 100, 200)).save(os.path.join(folder, f"{image_id}.jpg"), "JPEG")
    return str(root), image_root


def _read_split(info, split):
    return {r["id"]: r for r in iterate_label_lists(info.split_files(split))}


def _check_dataset(info):
    assert info.multi_label and info.num_classes == 6
    assert [c.id for c in info.classes] == TRAINABLE
    assert info.class_names == ["dog", "cat", "bird", "car", "organ (/m/013y0j)", "organ (/m/013y1f)"]
    assert [c.category for c in info.classes] == ["animal", "animal", "animal", "vehicle", "others", "others"]
    noisy = _read_split(info, "noisy")
    assert {i: r["noisy"] for i, r in noisy.items()} == EXPECTED_NOISY
    assert all(r["verified_pos"] == [] and r["verified_neg"] == [] for r in noisy.values())
    parts = {s: _read_split(info, s) for s in ("clean", "val", "test")}
    assert {s: len(p) for s, p in parts.items()} == {"clean": 2, "val": 3, "test": 3}
    merged = {i: (r["noisy"], r["verified_pos"], r["verified_neg"]) for p in parts.values() for i, r in p.items()}
    assert merged == EXPECTED_VALIDATION
    return {s: sorted(p) for s, p in parts.items()}


def test_convert_real_layout(tmp_path):
    oi_dir, image_root = make_openimages(tmp_path / "oi")
    conversion = openimages.convert(
        oi_dir, image_root=image_root, categories_path=os.path.join(oi_dir, "categories.csv")
    )
    assert conversion.total == len(TRAIN) + len(VALIDATION)
    info = write_dataset(conversion, str(tmp_path / "out"), num_shards=2, progress=False)
    first = _check_dataset(info)
    details = info.provenance["details"]
    assert details["dropped_labels"] == {
        "machine_outside_classes": 1,
        "machine_below_min_confidence": 2,
        "human_outside_classes": 1,
    }
    assert details["labelled_images_not_in_images_csv"] == {"train": 0, "validation": 0}
    again = write_dataset(
        openimages.convert(oi_dir, image_root=image_root, categories_path=os.path.join(oi_dir, "categories.csv")),
        str(tmp_path / "again"),
        progress=False,
    )
    assert _check_dataset(again) == first
    other_seed = write_dataset(
        openimages.convert(oi_dir, image_root=image_root, seed=3), str(tmp_path / "seed3"), progress=False
    )
    assert [c.category for c in other_seed.classes] == ["others"] * 6
    assert {s: sorted(_read_split(other_seed, s)) for s in ("clean", "val", "test")} != first


def test_flat_image_folder_and_min_confidence(tmp_path):
    oi_dir, image_root = make_openimages(tmp_path / "oi", flat_images=True)
    info = write_dataset(
        openimages.convert(oi_dir, image_root=image_root, min_confidence=0.65, clean_share=0.0, val_share=1.0),
        str(tmp_path / "out"),
        progress=False,
    )
    assert sorted(info.splits) == ["noisy", "val"]
    noisy = _read_split(info, "noisy")
    assert noisy["000095d8b8d9a0ea"]["noisy"] == [CAR]
    assert _read_split(info, "val")["0004f7a4e6a2fa13"]["noisy"] == [CAT]


def test_bad_rows_fail_or_are_skipped(tmp_path):
    bad = [["0001a4d0b6f0ab6c", "machine", "/m/zzzzz", "0.9"], ["0001a4d0b6f0ab6c", "machine", "/m/0k4j"]]
    oi_dir, image_root = make_openimages(tmp_path / "oi", extra_machine_rows=bad)
    labels_csv = os.path.join(oi_dir, "machine_ann_2016_08/train/labels.csv")
    first_bad_line = 1 + sum(len(v) for v in TRAIN.values()) + 1
    with pytest.raises(BadInputError, match=re.escape(f"{labels_csv}:{first_bad_line}: unknown class id '/m/zzzzz'")):
        write_dataset(openimages.convert(oi_dir, image_root=image_root), str(tmp_path / "out"), progress=False)
    assert not os.path.exists(tmp_path / "out")
    info = write_dataset(
        openimages.convert(oi_dir, image_root=image_root), str(tmp_path / "out"), skip_bad=True, progress=False
    )
    assert info.skipped["count"] == 2
    assert info.skipped["rows"][1] == {
        "origin": f"{labels_csv}:{first_bad_line + 1}",
        "reason": "expected 4 columns (ImageID,Source,LabelName,Confidence), got 3",
    }
    assert _read_split(info, "noisy")["0001a4d0b6f0ab6c"]["noisy"] == []


def test_whole_input_problems(tmp_path):
    oi_dir, _ = make_openimages(tmp_path / "oi")
    os.remove(os.path.join(oi_dir, "human_ann_2016_08/validation/labels.csv"))
    with pytest.raises(ConversionError, match="human_ann_2016_08/validation/labels.csv"):
        openimages.convert(oi_dir)
    oi_dir, _ = make_openimages(tmp_path / "oi2")
    _write_csv(os.path.join(oi_dir, "machine_ann_2016_08/train/labels.csv"), ["ImageID", "Source", "LabelName"], [])
    with pytest.raises(ConversionError, match="lacks the column.*Confidence"):
        openimages.convert(oi_dir)
    with pytest.raises(ConversionError, match="clean_share"):
        openimages.convert(oi_dir, clean_share=1.5)


def test_cli(tmp_path):
    oi_dir, image_root = make_openimages(tmp_path / "oi")
    out = tmp_path / "out"
    result = run_cli(
        "make_tfrecords",
        "--source=openimages",
        f"--openimages_dir={oi_dir}",
        f"--image_root={image_root}",
        f"--output_dir={out}",
        "--openimages_categories",
        os.path.join(oi_dir, "categories.csv"),
        "--quiet",
        "--num_shards=1",
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: 6 classes, clean=2, noisy=4, test=3, val=3; 0 bad rows skipped" in result.stdout


# === Faults: a corrupt image, a missing image, a malformed row ===
FAULTS = ("corrupt_image", "missing_image", "malformed_row")


def _add_fault(oi_dir, image_root, fault):
    """Puts `fault` into the tree; returns (origin, reason) of the row it spoils and that row's ImageID."""
    images_csv = os.path.join(oi_dir, openimages.IMAGES_CSV)
    if fault == "corrupt_image":  # train, the second row of images.csv
        image_id = "000095d8b8d9a0ea"
        path = os.path.join(image_root, "train", f"{image_id}.jpg")
        cut_in_half(path)
        return (f"{images_csv.format(subset='train')}:3", f"{path}: cannot decode image: "), image_id
    if fault == "missing_image":  # validation, the fourth row
        image_id = "0000c64e1253d68f"
        path = os.path.join(image_root, "validation", f"{image_id}.jpg")
        os.remove(path)
        return (f"{images_csv.format(subset='validation')}:5", f"image file not found: {path}"), image_id
    # A Title written without its quotes: its comma makes one column too many (validation, the third row).
    image_id, path = "000062a39995e348", images_csv.format(subset="validation")
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[3].startswith(image_id)
    lines[3] = lines[3].replace('"A title, with a comma"', "A title, with a comma")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    reason = f"expected {len(IMAGES_HEADER)} columns ({','.join(IMAGES_HEADER)}), got {len(IMAGES_HEADER) + 1}"
    return (f"{path}:4", reason), image_id


def _check_all_but(info, left_out):
    """Every image but `left_out` is written, with its labels."""
    noisy = {i: r["noisy"] for i, r in _read_split(info, "noisy").items()}
    assert noisy == {i: v for i, v in EXPECTED_NOISY.items() if i not in left_out}
    merged = {
        i: (r["noisy"], r["verified_pos"], r["verified_neg"])
        for split in ("clean", "val", "test")
        if split in info.splits
        for i, r in _read_split(info, split).items()
    }
    assert merged == {i: v for i, v in EXPECTED_VALIDATION.items() if i not in left_out}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_fails_in_one_line_naming_its_row_or_is_skipped_and_listed(tmp_path, fault):
    oi_dir, image_root = make_openimages(tmp_path / "oi")
    (origin, reason), image_id = _add_fault(oi_dir, image_root, fault)
    convert = lambda: openimages.convert(oi_dir, image_root=image_root)  # noqa: E731
    message = fails_in_one_line(convert(), tmp_path / "out")
    assert message.startswith(f"{origin}: {reason}")
    info = skips(convert(), tmp_path / "out")
    [(got_origin, got_reason)] = skipped_rows(info)
    assert got_origin == origin and got_reason.startswith(reason)
    _check_all_but(info, {image_id})


def test_the_binary_names_the_first_of_several_faults_in_one_line(tmp_path):
    oi_dir, image_root = make_openimages(tmp_path / "oi")
    spoiled = [_add_fault(oi_dir, image_root, fault) for fault in FAULTS]
    out = tmp_path / "out"
    proc = run_cli(
        "make_tfrecords",
        "--source=openimages",
        f"--openimages_dir={oi_dir}",
        f"--image_root={image_root}",
        f"--output_dir={out}",
        "--quiet",
    )
    (origin, reason), _ = spoiled[0]  # the training images come first
    assert cli_error_line(proc).startswith(f"{origin}: {reason}")
    assert nothing_written(out)
    info = skips(openimages.convert(oi_dir, image_root=image_root), out)
    # Stream order: the training images, then the validation images.csv as it is read, then its images.
    assert [o for o, _ in skipped_rows(info)] == [spoiled[i][0][0] for i in (0, 2, 1)]
    _check_all_but(info, {image_id for _, image_id in spoiled})


def test_v1_validation_images_divided_between_validation_and_test_folders(tmp_path):
    """From V2 on, v1's validation images are in validation/ (41,620) and test/ (125,436): both are read."""
    oi_dir, image_root = make_openimages(tmp_path)
    os.makedirs(os.path.join(image_root, "test"))
    moved = sorted(VALIDATION)[::2]
    for image_id in moved:
        name = f"{image_id}.jpg"
        os.rename(os.path.join(image_root, "validation", name), os.path.join(image_root, "test", name))
    categories = os.path.join(oi_dir, "categories.csv")
    conversion = openimages.convert(oi_dir, image_root=image_root, categories_path=categories)
    info = write_dataset(conversion, str(tmp_path / "out"), progress=False)
    _check_dataset(info)  # every image found, each where it now is
