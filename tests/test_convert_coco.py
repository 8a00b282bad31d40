"""COCO 2014 converter on tiny instances files in the real COCO layout."""

import csv
import json
import os
import re

import pytest
from cli_util import run_cli
from fault_util import cli_error_line, cut_in_half, fails_in_one_line, nothing_written, skipped_rows, skips
from PIL import Image

from nlr_tf.data.parsing import iterate_label_lists
from tfrecords_tools import coco
from tfrecords_tools.records import ConversionError
from tfrecords_tools.writer import BadInputError, write_dataset

CATEGORIES = [
    {"supercategory": "person", "id": 1, "name": "person"},
    {"supercategory": "vehicle", "id": 2, "name": "bicycle"},
    {"supercategory": "vehicle", "id": 3, "name": "car"},
    {"supercategory": "animal", "id": 17, "name": "cat"},
    {"supercategory": "animal", "id": 18, "name": "dog"},
    {"supercategory": "kitchen", "id": 44, "name": "bottle"},
]
TRAIN_ANNOTATIONS = {9: [18, 1], 25: [3], 30: [], 34: [44], 36: [1, 1, 2], 49: [17], 61: [], 64: [18], 71: [3], 72: [1]}
VAL_ANNOTATIONS = {42: [1], 73: [18, 3], 74: [], 133: [44], 136: [17], 139: [2], 143: [1]}
PREDICTIONS = [  # (image id, ImageNet synset, score)
    (9, "n02085620", 0.9),
    (9, "n04254680", 0.8),
    (9, "n02814533", 0.1),
    (25, "n02814533", 0.7),
    (25, "n03792782", 0.6),
    (30, "n02123045", 0.5),
    (34, "n04254680", 0.9),
    (49, "n02123045", 0.3),
    (49, "n02085620", 0.3),
    (49, "n02814533", 0.3),
    (64, "n03792782", 0.95),
    (42, "n02085620", 0.6),
    (133, "n02814533", 0.4),
]
CLASS_MAP = [("person", "person"), ("bicycle", "vehicle"), ("car", "vehicle"), ("cat", "pet"), ("dog", "pet")]
ANNOTATOR_MAP = [("n02085620", "pet"), ("n02123045", "pet"), ("n02814533", "vehicle"), ("n03792782", "vehicle")]
PERSON, VEHICLE, PET = range(3)
EXPECTED_TRAIN = {  # COCO id -> (clean, noisy) with top_k=2
    9: ([PERSON, PET], [PET]),
    25: ([VEHICLE], [VEHICLE]),
    30: ([], [PET]),
    36: ([PERSON, VEHICLE], []),
    49: ([PET], [PET]),
    64: ([PET], [VEHICLE]),
    71: ([VEHICLE], []),
    72: ([PERSON], []),
}
EXPECTED_VAL = {
    42: ([PERSON], [PET]),
    73: ([VEHICLE, PET], []),
    133: ([], [VEHICLE]),
    136: ([PET], []),
    139: ([VEHICLE], []),
    143: ([PERSON], []),
}


def file_name(subset, coco_id):
    return f"COCO_{subset}_{coco_id:012d}.jpg"


def _instances(subset, annotations, extra_annotations=()):
    images = [
        {
            "license": 3,
            "file_name": file_name(subset, i),
            "coco_url": f"http://images.cocodataset.org/{subset}/{file_name(subset, i)}",
            "height": 6,
            "width": 8,
            "date_captured": "2013-11-14 16:28:13",
            "flickr_url": "http://farm.staticflickr.com/x.jpg",
            "id": i,
        }
        for i in annotations
    ]
    anns = [
        {
            "segmentation": [[1.0, 1.0, 4.0, 1.0, 4.0, 4.0]],
            "area": 4.5,
            "iscrowd": 0,
            "image_id": i,
            "bbox": [1.0, 1.0, 3.0, 3.0],
            "category_id": c,
            "id": 1000 * i + k,
        }
        for i, cats in annotations.items()
        for k, c in enumerate(cats)
    ]
    anns += list(extra_annotations)
    return {
        "info": {"description": "COCO 2014 Dataset"},
        "images": images,
        "licenses": [],
        "annotations": anns,
        "categories": CATEGORIES,
    }


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def make_coco(root, extra_annotations=(), extra_predictions=()):
    """Writes annotations/, train2014/, val2014/ and the map and prediction files under `root`."""
    os.makedirs(os.path.join(root, "annotations"))
    for subset, table in (("train2014", TRAIN_ANNOTATIONS), ("val2014", VAL_ANNOTATIONS)):
        extra = extra_annotations if subset == "train2014" else ()
        with open(os.path.join(root, f"annotations/instances_{subset}.json"), "w") as f:
            json.dump(_instances(subset, table, extra), f)
        os.makedirs(os.path.join(root, subset))
        for k, i in enumerate(table):
            Image.new("RGB", (8, 6), (20 * k, 50, 90)).save(os.path.join(root, subset, file_name(subset, i)), "JPEG")
    _write_csv(os.path.join(root, "class_map.csv"), ["coco_category_name", "target_class"], CLASS_MAP)
    _write_csv(os.path.join(root, "imagenet_to_coco.csv"), ["annotator_label", "target_class"], ANNOTATOR_MAP)
    _write_csv(
        os.path.join(root, "predictions.csv"),
        ["image_id", "label", "score"],
        list(PREDICTIONS) + list(extra_predictions),
    )
    return {
        "instances_train": os.path.join(root, "annotations/instances_train2014.json"),
        "instances_val": os.path.join(root, "annotations/instances_val2014.json"),
        "predictions": os.path.join(root, "predictions.csv"),
        "class_map": os.path.join(root, "class_map.csv"),
        "annotator_map": os.path.join(root, "imagenet_to_coco.csv"),
    }


def _read_split(info, split):
    return {r["id"]: r for r in iterate_label_lists(info.split_files(split))}


def test_convert_with_maps(tmp_path):
    paths = make_coco(str(tmp_path / "coco"))
    conversion = coco.convert(**paths, top_k=2, clean_fraction=0.25, seed=1)
    info = write_dataset(conversion, str(tmp_path / "out"), num_shards=2, progress=False)
    assert info.multi_label
    assert [(c.name, c.category) for c in info.classes] == [
        ("person", "person"),
        ("vehicle", "vehicle"),
        ("pet", "animal"),
    ]
    noisy = _read_split(info, "noisy")
    assert {i: (r["noisy"], r["verified_pos"], r["verified_neg"]) for i, r in noisy.items()} == {
        file_name("train2014", i): (n, [], []) for i, (_, n) in EXPECTED_TRAIN.items()
    }
    clean = _read_split(info, "clean")
    assert len(clean) == 2
    for image_id, r in clean.items():
        want_clean, want_noisy = EXPECTED_TRAIN[int(image_id[-16:-4])]
        assert (r["noisy"], r["verified_pos"]) == (want_noisy, want_clean)
        assert r["verified_neg"] == [c for c in range(3) if c not in want_clean]
    val, test = _read_split(info, "val"), _read_split(info, "test")
    assert (len(val), len(test)) == (3, 3)
    merged = {i: (r["verified_pos"], r["noisy"]) for i, r in {**val, **test}.items()}
    assert merged == {file_name("val2014", i): v for i, v in EXPECTED_VAL.items()}
    assert all(sorted(r["verified_pos"] + r["verified_neg"]) == [0, 1, 2] for r in {**val, **test}.values())
    counts = info.provenance["details"]["counts"]
    assert counts["train_images_without_labels_removed"] == 2 and counts["val_images_without_labels_removed"] == 1
    assert counts["train_images_kept"] == 8 and counts["val_images_kept"] == 6


def test_jsonl_predictions_without_maps(tmp_path):
    paths = make_coco(str(tmp_path / "coco"))
    jsonl = os.path.join(str(tmp_path / "coco"), "tags.jsonl")
    with open(jsonl, "w") as f:
        f.write(
            json.dumps({"image_id": file_name("train2014", 30), "predictions": [["dog", 0.8], ["kite", 0.7]]}) + "\n"
        )
        f.write(json.dumps({"image_id": 42, "predictions": [["bottle", 0.4]]}) + "\n")
    info = write_dataset(
        coco.convert(paths["instances_train"], paths["instances_val"], jsonl, clean_fraction=0.0),
        str(tmp_path / "out"),
        progress=False,
    )
    assert info.class_names == ["person", "bicycle", "car", "cat", "dog", "bottle"]
    assert [c.category for c in info.classes] == ["person", "vehicle", "vehicle", "animal", "animal", "kitchen"]
    assert "clean" not in info.splits
    noisy = _read_split(info, "noisy")
    assert len(noisy) == 9  # image 61 has neither an annotation nor a prediction
    assert noisy[file_name("train2014", 30)]["noisy"] == [4]
    val = {**_read_split(info, "val"), **_read_split(info, "test")}
    assert (val[file_name("val2014", 42)]["noisy"], val[file_name("val2014", 42)]["verified_pos"]) == ([5], [0])
    assert info.provenance["details"]["counts"]["predictions_outside_classes"] == 1


def test_bad_rows_fail_or_are_skipped(tmp_path):
    bad_annotation = {"image_id": 25, "category_id": 99, "bbox": [0, 0, 1, 1], "id": 5}
    paths = make_coco(
        str(tmp_path / "coco"), extra_annotations=[bad_annotation], extra_predictions=[(999999, "n02085620", 0.5)]
    )
    position = sum(len(v) for v in TRAIN_ANNOTATIONS.values())
    message = f"{paths['instances_train']}:annotations[{position}]: unknown category_id 99"
    with pytest.raises(BadInputError, match=re.escape(message)):
        write_dataset(coco.convert(**paths), str(tmp_path / "out"), progress=False)
    info = write_dataset(coco.convert(**paths), str(tmp_path / "out"), skip_bad=True, progress=False)
    assert info.skipped["count"] == 2
    assert info.skipped["rows"][1] == {
        "origin": f"{paths['predictions']}:{len(PREDICTIONS) + 2}",
        "reason": "unknown image_id '999999' (not a COCO id or file name)",
    }


def test_whole_input_problems(tmp_path):
    paths = make_coco(str(tmp_path / "coco"))
    _write_csv(paths["class_map"], ["coco_category_name", "target_class"], [("unicorn", "pet")])
    with pytest.raises(ConversionError, match=re.escape(f"{paths['class_map']}:2: 'unicorn' is not a COCO category")):
        coco.convert(**paths)
    paths["class_map"] = None
    with pytest.raises(ConversionError, match="target_class 'pet' is not one of the classes"):
        coco.convert(**paths)
    with open(paths["instances_val"], "w") as f:
        json.dump({"images": []}, f)
    with pytest.raises(ConversionError, match="instances_val2014.json: lacks the list 'annotations'"):
        coco.convert(paths["instances_train"], paths["instances_val"], paths["predictions"])


def test_cli(tmp_path):
    paths = make_coco(str(tmp_path / "coco"))
    out = tmp_path / "out"
    result = run_cli(
        "make_tfrecords",
        "--source=coco",
        f"--coco_instances_train={paths['instances_train']}",
        f"--coco_instances_val={paths['instances_val']}",
        f"--coco_predictions={paths['predictions']}",
        f"--coco_class_map={paths['class_map']}",
        f"--coco_annotator_map={paths['annotator_map']}",
        "--coco_top_k=2",
        "--clean_fraction=0.25",
        f"--output_dir={out}",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: 3 classes, clean=2, noisy=8, test=3, val=3; 0 bad rows skipped" in result.stdout


def test_text_in_another_encoding_is_named_by_line_and_byte_and_read_with_encoding(tmp_path):
    paths = make_coco(str(tmp_path / "coco"))
    jsonl = os.path.join(str(tmp_path / "coco"), "tags.jsonl")
    lines = [
        {"image_id": file_name("train2014", 30), "predictions": [["dog", 0.8]]},
        {"image_id": file_name("train2014", 30), "predictions": [["chien_é", 0.5]]},  # written as latin-1
    ]
    with open(jsonl, "wb") as f:
        f.write(b"".join(json.dumps(obj, ensure_ascii=False).encode("latin-1") + b"\n" for obj in lines))
    message = r"tags.jsonl:2: byte \d+ \(b'\\xe9'\) is not valid utf-8; pass --encoding"
    with pytest.raises(ConversionError, match=message):
        write_dataset(coco.convert(paths["instances_train"], paths["instances_val"], jsonl), str(tmp_path / "a"))
    conversion = coco.convert(paths["instances_train"], paths["instances_val"], jsonl, encoding="latin-1")
    assert conversion.details["counts"]["predictions_outside_classes"] == 1  # chien_é, read and counted
    # The instances file too: one line naming the byte, not a traceback.
    with open(paths["instances_val"], "rb") as f:
        data = f.read()
    with open(paths["instances_val"], "wb") as f:
        f.write(data.replace(b'"person"', b'"person\xe9"', 1))
    with pytest.raises(ConversionError, match=r"instances_val2014.json:1: byte \d+ \(b'\\xe9'\) is not valid utf-8"):
        coco.convert(paths["instances_train"], paths["instances_val"], jsonl, encoding="utf-8")


# === Faults: a corrupt image, a missing image, malformed entries ===
FAULTS = ("corrupt_image", "missing_image", "malformed_row")


def _convert(paths):
    return coco.convert(**paths, clean_fraction=0.25)  # two of the eight labelled training images


def _edit_instances(path, edit):
    with open(path) as f:
        data = json.load(f)
    edit(data)
    with open(path, "w") as f:
        json.dump(data, f)


def _add_fault(root, paths, fault):
    """Puts `fault` into the tree; returns the (origin, reason) of the entries it spoils and the ids left out."""
    if fault == "corrupt_image":  # a training image that is in `clean` too: one bad row, not two
        name = next(r.id for r in _convert(paths).items if r.split == "clean")
        path = os.path.join(root, "train2014", name)
        cut_in_half(path)
        origin = f"{paths['instances_train']}:images[{list(TRAIN_ANNOTATIONS).index(int(name[-16:-4]))}]"
        return [(origin, f"{path}: cannot decode image: ")], {name}
    if fault == "missing_image":
        path = os.path.join(root, "val2014", file_name("val2014", 73))
        os.remove(path)
        return [(f"{paths['instances_val']}:images[1]", f"image file not found: {path}")], {file_name("val2014", 73)}
    # An image without a file name, an annotation of an unknown image, and one whose image_id is a fraction
    # (taken as image 74 it would give that unlabelled image the label person).
    _edit_instances(paths["instances_train"], lambda d: d["images"].append({"id": 80, "file_name": None}))
    _edit_instances(paths["instances_train"], lambda d: d["annotations"].append({"image_id": 999, "category_id": 1}))
    _edit_instances(paths["instances_val"], lambda d: d["annotations"].append({"image_id": 74.5, "category_id": 1}))
    num_train, num_val = (sum(len(v) for v in t.values()) for t in (TRAIN_ANNOTATIONS, VAL_ANNOTATIONS))
    return [
        (
            f"{paths['instances_train']}:images[{len(TRAIN_ANNOTATIONS)}]",
            "an image needs an integer id and a file_name: file_name None is not a file name",
        ),
        (f"{paths['instances_train']}:annotations[{num_train}]", "unknown image_id 999"),
        (
            f"{paths['instances_val']}:annotations[{num_val}]",
            "an annotation needs an integer image_id and category_id: image_id 74.5 is not an integer",
        ),
    ], set()


def _check_all_but(info, left_out):
    """Every labelled image but `left_out` is written; the held-out ones with their verified labels."""
    noisy = _read_split(info, "noisy")
    assert sorted(noisy) == sorted(n for n in (file_name("train2014", i) for i in EXPECTED_TRAIN) if n not in left_out)
    held_out = {**_read_split(info, "val"), **_read_split(info, "test")}
    want = {file_name("val2014", i): clean for i, (clean, _) in EXPECTED_VAL.items()}
    assert {i: r["verified_pos"] for i, r in held_out.items()} == {i: v for i, v in want.items() if i not in left_out}
    clean = _read_split(info, "clean")
    assert len(clean) == 2 - len({n for n in left_out if "train2014" in n})  # the left-out training image was clean
    assert all(i not in left_out for i in clean)


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_fails_in_one_line_naming_its_entry_or_is_skipped_and_listed(tmp_path, fault):
    paths = make_coco(str(tmp_path / "coco"))
    spoiled, left_out = _add_fault(str(tmp_path / "coco"), paths, fault)
    message = fails_in_one_line(_convert(paths), tmp_path / "out")
    assert message.startswith("{}: {}".format(*spoiled[0]))
    info = skips(_convert(paths), tmp_path / "out")
    rows = skipped_rows(info)
    assert [o for o, _ in rows] == [o for o, _ in spoiled]
    assert all(got.startswith(want) for (_, got), (_, want) in zip(rows, spoiled))
    _check_all_but(info, left_out)
    assert info.provenance["details"]["counts"]["val_images_without_labels_removed"] == 1  # image 74 stays unlabelled


def test_the_binary_names_the_first_of_several_faults_in_one_line(tmp_path):
    root = str(tmp_path / "coco")
    paths = make_coco(root)
    spoiled = [_add_fault(root, paths, fault) for fault in FAULTS]
    out = tmp_path / "out"
    proc = run_cli(
        "make_tfrecords",
        "--source=coco",
        f"--coco_instances_train={paths['instances_train']}",
        f"--coco_instances_val={paths['instances_val']}",
        f"--coco_predictions={paths['predictions']}",
        f"--coco_class_map={paths['class_map']}",
        f"--coco_annotator_map={paths['annotator_map']}",
        "--clean_fraction=0.25",
        f"--output_dir={out}",
        "--quiet",
    )
    malformed = spoiled[2][0]  # malformed entries are found while reading, before any image
    assert cli_error_line(proc).startswith("{}: {}".format(*malformed[0]))
    assert nothing_written(out)
    info = skips(_convert(paths), out)
    assert [o for o, _ in skipped_rows(info)] == [o for o, _ in malformed] + [spoiled[i][0][0][0] for i in (0, 1)]
    _check_all_but(info, spoiled[0][1] | spoiled[1][1])
