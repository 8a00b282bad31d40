"""Clothing1M converter on a tiny copy of the real key/label text files."""

import os
import re

import pytest
from cli_util import run_cli
from PIL import Image

from nlr_tf.data.parsing import iterate_label_lists
from tfrecords_tools import clothing1m
from tfrecords_tools.records import ConversionError
from tfrecords_tools.writer import BadInputError, write_dataset

NAMES = [
    "T-Shirt",
    "Shirt",
    "Knitwear",
    "Chiffon",
    "Sweater",
    "Hoodie",
    "Windbreaker",
    "Jacket",
    "Downcoat",
    "Suit",
    "Shawl",
    "Dress",
    "Vest",
    "Underwear",
]
NOISY_LABELS = {
    "images/0/46/3146984028,2658209476.jpg": 0,
    "images/2/26/3761328114,905362226.jpg": 7,
    "images/5/03/1882516307,3447155312.jpg": 11,
    "images/9/99/2219137553,1178744418.jpg": 3,
    "images/7/12/4061357010,2011413385.jpg": 13,
    "images/1/64/2743201875,1650722164.jpg": 4,
    "images/4/80/1059340313,3390118622.jpg": 9,
}
CLEAN_LABELS = {
    "images/5/03/1882516307,3447155312.jpg": 12,
    "images/8/33/3325870591,1453227512.jpg": 1,
    "images/1/64/2743201875,1650722164.jpg": 4,
    "images/6/25/2938405712,1987620215.jpg": 5,
    "images/3/51/1002938475,3829102834.jpg": 10,
    "images/4/80/1059340313,3390118622.jpg": 2,
}
KEY_LISTS = {
    "noisy_train_key_list.txt": [
        "images/0/46/3146984028,2658209476.jpg",
        "images/2/26/3761328114,905362226.jpg",
        "images/5/03/1882516307,3447155312.jpg",
        "images/9/99/2219137553,1178744418.jpg",
        "images/7/12/4061357010,2011413385.jpg",
    ],
    "clean_train_key_list.txt": ["images/5/03/1882516307,3447155312.jpg", "images/8/33/3325870591,1453227512.jpg"],
    "clean_val_key_list.txt": ["images/1/64/2743201875,1650722164.jpg", "images/6/25/2938405712,1987620215.jpg"],
    "clean_test_key_list.txt": ["images/3/51/1002938475,3829102834.jpg", "images/4/80/1059340313,3390118622.jpg"],
}


def _write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def make_clothing1m(root, extra_noisy_lines=(), extra_clean_test_keys=()):
    os.makedirs(root)
    _write_lines(os.path.join(root, "category_names_eng.txt"), NAMES)
    _write_lines(
        os.path.join(root, "noisy_label_kv.txt"),
        [f"{k} {v}" for k, v in NOISY_LABELS.items()] + list(extra_noisy_lines),
    )
    _write_lines(os.path.join(root, "clean_label_kv.txt"), [f"{k} {v}" for k, v in CLEAN_LABELS.items()])
    for name, keys in KEY_LISTS.items():
        extra = list(extra_clean_test_keys) if name == "clean_test_key_list.txt" else []
        _write_lines(os.path.join(root, name), keys + extra)
    for n, key in enumerate(sorted(set(NOISY_LABELS) | set(CLEAN_LABELS))):
        os.makedirs(os.path.dirname(os.path.join(root, key)), exist_ok=True)
        Image.new("RGB", (6, 8), (10 * n, 60, 120)).save(os.path.join(root, key), "JPEG")
    return str(root)


def _labels(info, split):
    return {
        r["id"]: (r["noisy"], r["verified_pos"], r["verified_neg"])
        for r in iterate_label_lists(info.split_files(split))
    }


def _verified(label, noisy=()):
    return list(noisy), [label], [c for c in range(14) if c != label]


def test_convert_real_layout(tmp_path):
    root = make_clothing1m(tmp_path / "clothing1M")
    conversion = clothing1m.convert(root)
    assert conversion.total == 11 and not conversion.multi_label
    info = write_dataset(conversion, str(tmp_path / "out"), num_shards=2, progress=False)
    assert not info.multi_label and info.class_names == NAMES
    assert _labels(info, "noisy") == {k: ([NOISY_LABELS[k]], [], []) for k in KEY_LISTS["noisy_train_key_list.txt"]}
    assert _labels(info, "clean") == {
        "images/5/03/1882516307,3447155312.jpg": _verified(12, noisy=[11]),
        "images/8/33/3325870591,1453227512.jpg": _verified(1),
    }
    assert _labels(info, "val") == {
        "images/1/64/2743201875,1650722164.jpg": _verified(4, noisy=[4]),
        "images/6/25/2938405712,1987620215.jpg": _verified(5),
    }
    assert _labels(info, "test") == {
        "images/3/51/1002938475,3829102834.jpg": _verified(10),
        "images/4/80/1059340313,3390118622.jpg": _verified(2, noisy=[9]),
    }


def test_separate_image_root(tmp_path):
    root = make_clothing1m(tmp_path / "annotations")
    os.rename(os.path.join(root, "images"), tmp_path / "images")
    with pytest.raises(BadInputError, match="image file not found"):
        write_dataset(clothing1m.convert(root), str(tmp_path / "out"), progress=False)
    info = write_dataset(clothing1m.convert(root, image_root=str(tmp_path)), str(tmp_path / "out"), progress=False)
    assert info.splits["noisy"].num_records == 5


def test_bad_rows_fail_or_are_skipped(tmp_path):
    root = make_clothing1m(
        tmp_path / "clothing1M",
        extra_noisy_lines=["images/3/11/2003918274,1192837465.jpg", "images/3/12/2003918275,1192837466.jpg 14"],
        extra_clean_test_keys=["images/3/13/2003918276,1192837467.jpg"],
    )
    kv = os.path.join(root, "noisy_label_kv.txt")
    message = f"{kv}:{len(NOISY_LABELS) + 1}: expected `<image key> <class index>`"
    with pytest.raises(BadInputError, match=re.escape(message)):
        write_dataset(clothing1m.convert(root), str(tmp_path / "out"), progress=False)
    info = write_dataset(clothing1m.convert(root), str(tmp_path / "out"), skip_bad=True, progress=False)
    assert info.skipped["count"] == 3
    assert [r["reason"] for r in info.skipped["rows"][1:]] == [
        "label 14 is not a class index 0..13",
        f"key 'images/3/13/2003918276,1192837467.jpg' has no label in {os.path.join(root, 'clean_label_kv.txt')}",
    ]
    assert info.skipped["rows"][2]["origin"] == f"{os.path.join(root, 'clean_test_key_list.txt')}:3"
    assert info.splits["test"].num_records == 2


def test_missing_file(tmp_path):
    root = make_clothing1m(tmp_path / "clothing1M")
    os.remove(os.path.join(root, "clean_val_key_list.txt"))
    with pytest.raises(ConversionError, match="clean_val_key_list.txt"):
        clothing1m.convert(root)


def test_cli(tmp_path):
    root = make_clothing1m(tmp_path / "clothing1M")
    out = tmp_path / "out"
    result = run_cli(
        "make_tfrecords",
        "--source=clothing1m",
        f"--clothing1m_dir={root}",
        f"--output_dir={out}",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: 14 classes, clean=2, noisy=5, test=2, val=2; 0 bad rows skipped" in result.stdout


def test_a_file_in_another_encoding_is_named_by_line_and_byte_and_read_with_encoding(tmp_path):
    root = make_clothing1m(tmp_path / "clothing1M")
    names = [NAMES[0], NAMES[1] + " é"] + NAMES[2:]
    with open(os.path.join(root, "category_names_eng.txt"), "wb") as f:
        f.write("\n".join(names).encode("latin-1") + b"\n")
    message = r"category_names_eng.txt:2: byte \d+ \(b'\\xe9'\) is not valid utf-8; pass --encoding"
    with pytest.raises(ConversionError, match=message):
        clothing1m.convert(root)
    assert clothing1m.convert(root, encoding="latin-1").classes[1].name == NAMES[1] + " é"
    result = run_cli(
        "make_tfrecords",
        "--source=clothing1m",
        f"--clothing1m_dir={root}",
        f"--output_dir={tmp_path / 'out'}",
        "--quiet",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "category_names_eng.txt:2: byte" in result.stderr.strip().splitlines()[-1]
