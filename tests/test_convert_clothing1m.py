"""Clothing1M converter on a tiny copy of the real key/label text files."""

import os
import re

import pytest
from cli_util import run_cli
from fault_util import cli_error_line, cut_in_half, fails_in_one_line, nothing_written, skipped_rows, skips
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


# === Faults: a corrupt image, a missing image, malformed label lines ===
FAULTS = ("corrupt_image", "missing_image", "malformed_row")
MALFORMED_LINES = [  # keys no list names, so only the lines are bad
    "images/3/14/2003918277,1192837468.jpg",
    "images/3/15/2003918278,1192837469.jpg 3.5",
    "images/3/16/2003918279,1192837470.jpg x",
    "images/3/17/2003918280,1192837471.jpg --3",
]


def _add_fault(root, fault):
    """Puts `fault` into the tree; returns the (origin, reason) of the rows it spoils and the keys left out."""
    if fault == "corrupt_image":  # the first key of the noisy list
        key = KEY_LISTS["noisy_train_key_list.txt"][0]
        cut_in_half(os.path.join(root, key))
        origin = f"{os.path.join(root, 'noisy_train_key_list.txt')}:1"
        return [(origin, f"{os.path.join(root, key)}: cannot decode image: ")], {key}
    if fault == "missing_image":  # the second key of the validation list
        key = KEY_LISTS["clean_val_key_list.txt"][1]
        os.remove(os.path.join(root, key))
        origin = f"{os.path.join(root, 'clean_val_key_list.txt')}:2"
        return [(origin, f"image file not found: {os.path.join(root, key)}")], {key}
    kv = os.path.join(root, "noisy_label_kv.txt")
    with open(kv, "a") as f:
        f.write("\n".join(MALFORMED_LINES) + "\n")
    return [
        (f"{kv}:{len(NOISY_LABELS) + 1 + i}", f"expected `<image key> <class index>`, got {line!r}")
        for i, line in enumerate(MALFORMED_LINES)
    ], set()


def _check_all_but(info, left_out):
    """Every listed key but `left_out` is written to its split."""
    for list_name, split in zip(KEY_LISTS, ("noisy", "clean", "val", "test")):
        assert sorted(_labels(info, split)) == sorted(k for k in KEY_LISTS[list_name] if k not in left_out)


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_fails_in_one_line_naming_its_row_or_is_skipped_and_listed(tmp_path, fault):
    root = make_clothing1m(tmp_path / "clothing1M")
    spoiled, left_out = _add_fault(root, fault)
    message = fails_in_one_line(clothing1m.convert(root), tmp_path / "out")
    assert message.startswith("{}: {}".format(*spoiled[0]))
    info = skips(clothing1m.convert(root), tmp_path / "out")
    rows = skipped_rows(info)
    assert [o for o, _ in rows] == [o for o, _ in spoiled]
    assert all(got.startswith(want) for (_, got), (_, want) in zip(rows, spoiled))
    _check_all_but(info, left_out)


def test_the_binary_names_the_first_of_several_faults_in_one_line(tmp_path):
    root = make_clothing1m(tmp_path / "clothing1M")
    spoiled = [_add_fault(root, fault) for fault in FAULTS]
    out = tmp_path / "out"
    proc = run_cli(
        "make_tfrecords", "--source=clothing1m", f"--clothing1m_dir={root}", f"--output_dir={out}", "--quiet"
    )
    malformed = spoiled[2][0]  # the label files are read before any key list
    assert cli_error_line(proc).startswith("{}: {}".format(*malformed[0]))
    assert nothing_written(out)
    info = skips(clothing1m.convert(root), out)
    assert [o for o, _ in skipped_rows(info)] == [o for o, _ in malformed] + [spoiled[i][0][0][0] for i in (0, 1)]
    _check_all_but(info, spoiled[0][1] | spoiled[1][1])
