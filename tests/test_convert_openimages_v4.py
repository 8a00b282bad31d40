"""Open Images V4-V7 converter on files with today's names and columns (a few hundred rows)."""

import csv
import os

import numpy as np
import pytest
from cli_util import run_cli
from PIL import Image

from nlr_tf.data.parsing import iterate_label_lists
from tfrecords_tools import openimages_v4
from tfrecords_tools.records import ConversionError
from tfrecords_tools.writer import write_dataset

MIDS = ["/m/0bt9lr", "/m/01yrx", "/m/015p6", "/m/0k4j", "/m/07j7r", "/m/09j2d"]
NAMES = ["Dog", "Cat", "Bird", "Car", "Tree", "Clothing"]
TRAINABLE = MIDS[:5]  # Clothing is not trainable: its labels are dropped and counted
SIZES = {"train": 200, "validation": 60, "test": 60}
IMAGES_HEADER = ["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL", "Author",
                 "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation"]


def _id(split, k):
    return f"{SPLITS_CODE[split]}{k:015x}"


SPLITS_CODE = {"train": "a", "validation": "b", "test": "c"}


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)


def make_v7(root, missing_images=()):
    """oidv7-named files under root, images under root/images/<split>/; returns the truth per image."""
    rng = np.random.default_rng(0)
    _write(root / "oidv7-class-descriptions.csv", ["LabelName", "DisplayName"], zip(MIDS, NAMES))
    (root / "oidv7-classes-trainable.txt").write_text("\n".join(TRAINABLE) + "\n")
    truth = {}
    for split, n in SIZES.items():
        short = "val" if split == "validation" else split
        machine, human = [], []
        for k in range(n):
            image_id = _id(split, k)
            present = {m for m in MIDS if rng.random() < 0.3}
            truth[image_id] = present
            for m in MIDS:
                if (m in present and rng.random() < 0.7) or (m not in present and rng.random() < 0.1):
                    machine.append([image_id, "machine", m, f"{rng.uniform(0.3, 1.0):.1f}"])
                if (split != "train" or k % 4 == 0) and rng.random() < 0.6:  # a quarter of train verified
                    human.append([image_id, "verification", m, 1 if m in present else 0])
        header = ["ImageID", "Source", "LabelName", "Confidence"]
        _write(root / f"oidv7-{short}-annotations-human-imagelabels.csv", header, human)
        machine_name = f"{split}-annotations-machine-imagelabels.csv"  # V5's name, still what some mirrors hold
        _write(root / (f"oidv7-{machine_name}" if split == "train" else machine_name), header, machine)
        folder = root / "images" / split
        folder.mkdir(parents=True)
        for k in range(n):
            if _id(split, k) not in missing_images:
                Image.new("RGB", (8, 6), (k % 255, 100, 200)).save(folder / f"{_id(split, k)}.jpg", "JPEG")
    rows = [[_id("train", k), "train", "", "", "", "", "", "", "", "", "", "0.0"] for k in range(SIZES["train"])]
    _write(root / "oidv6-train-images-with-labels-with-rotation.csv", IMAGES_HEADER, rows)
    return truth


def _read(info, split):
    return {r["id"]: r for r in iterate_label_lists(info.split_files(split))}


def test_v7_files_convert_with_the_clean_set_from_validation(tmp_path):
    truth = make_v7(tmp_path)
    assert openimages_v4.detect(str(tmp_path)) == "v4+"
    conversion = openimages_v4.convert(str(tmp_path), image_root=str(tmp_path / "images"), clean_share=0.5)
    info = write_dataset(conversion, str(tmp_path / "out"), progress=False)
    assert info.multi_label and info.class_names == NAMES[:5]  # the header row is no class; trainable only
    counts = {s: info.splits[s].num_records for s in info.splits}
    assert counts == {"noisy": 200, "clean": 30, "val": 30, "test": 60}
    for split in ("clean", "val", "test"):
        for image_id, r in _read(info, split).items():
            present = {MIDS.index(m) for m in truth[image_id] if m in TRAINABLE}
            assert set(r["verified_pos"]) <= present and not set(r["verified_neg"]) & present
    noisy = _read(info, "noisy")
    assert all(not r["verified_pos"] and not r["verified_neg"] for r in noisy.values())  # noisy: machine labels only
    assert sum(len(r["noisy"]) for r in noisy.values()) > 100
    dropped = info.provenance["details"]["dropped_labels"]
    assert dropped["machine_outside_classes"] > 0 and dropped["machine_below_min_confidence"] > 0


def test_the_clean_set_from_train_and_images_absent_from_disk(tmp_path):
    missing = {_id("train", 1), _id("train", 2), _id("test", 0)}
    make_v7(tmp_path, missing_images=missing)
    conversion = openimages_v4.convert(
        str(tmp_path), image_root=str(tmp_path / "images"), clean_from="train", clean_share=1.0, present_only=True
    )
    info = write_dataset(conversion, str(tmp_path / "out"), progress=False)
    counts = {s: info.splits[s].num_records for s in info.splits}
    # Train's verified quarter is the clean set; the images absent from disk are counted, not listed as bad rows.
    assert counts == {"noisy": 148, "clean": 50, "val": 60, "test": 59}
    details = info.provenance["details"]
    assert details["absent_images"] == {"noisy": 2, "test": 1} and details["labels_lost"]["test"] > 0
    assert info.skipped["count"] == 0


def test_missing_v4_files_are_named(tmp_path):
    make_v7(tmp_path)
    os.remove(tmp_path / "oidv7-test-annotations-human-imagelabels.csv")
    with pytest.raises(ConversionError, match="lacks the Open Images V4\\+ file\\(s\\) of human_test"):
        openimages_v4.convert(str(tmp_path))
    with pytest.raises(ConversionError, match="clean_from must be one of"):
        openimages_v4.convert(str(tmp_path), clean_from="test")


def test_cli_detects_the_release(tmp_path):
    make_v7(tmp_path)
    out = tmp_path / "out"
    proc = run_cli(
        "make_tfrecords",
        "--source=openimages",
        f"--openimages_dir={tmp_path}",
        f"--image_root={tmp_path / 'images'}",
        f"--output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "clean=15, noisy=200, test=60, val=45" in proc.stdout + proc.stderr
    proc = run_cli("make_tfrecords", "--source=openimages", f"--openimages_dir={tmp_path / 'images'}",
                   f"--output_dir={tmp_path / 'o2'}")
    assert proc.returncode == 1 and "holds neither Open Images v1" in proc.stderr
