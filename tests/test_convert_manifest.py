"""The `manifest` source, through the library and the nlr-make-tfrecords binary."""

import csv
import json

import numpy as np
import pytest
from cli_util import manifest_args, run_cli
from fault_util import fails_in_one_line, skipped_rows, skips
from PIL import Image

from nlr_tf.data.parsing import iterate_label_lists
from nlr_tf.data.schema import load_dataset_info
from tfrecords_tools import manifest
from tfrecords_tools.records import ConversionError
from tfrecords_tools.writer import BadInputError, write_dataset

CLASSES = ["cat,animal", "dog,animal", "car,vehicle", "bus,vehicle"]


def write_images(root, n, fmt="PNG"):
    rng = np.random.default_rng(1)
    (root / "img").mkdir(parents=True)
    paths = []
    for i in range(n):
        name = f"img/{i:03d}.{fmt.lower()}"
        Image.fromarray(rng.integers(0, 255, (9 + i % 3, 11, 3), dtype=np.uint8)).save(root / name, fmt)
        paths.append(name)
    return paths


def manifest_rows(paths):
    rng = np.random.default_rng(2)
    names = [c.split(",")[0] for c in CLASSES]
    rows = []
    for i, path in enumerate(paths):
        split = ["noisy", "noisy", "noisy", "clean", "val"][i % 5]
        pick = lambda k: sorted(rng.choice(names, size=k, replace=False).tolist())  # noqa: E731
        noisy = pick(int(rng.integers(0, 3)))
        vpos = pick(1) if split != "noisy" else []
        vneg = [n for n in pick(2) if n not in vpos] if split != "noisy" else []
        rows.append(
            {
                "image": path,
                "noisy": ";".join(noisy),
                "verified_pos": ";".join(vpos),
                "verified_neg": ";".join(vneg),
                "split": split,
                "id": f"id-{i}",
            }
        )
    return rows


def write_csv(path, rows, fields=("image", "noisy", "verified_pos", "verified_neg", "split", "id")):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def png_manifest(tmp_path):
    paths = write_images(tmp_path, 20)
    rows = manifest_rows(paths)
    write_csv(tmp_path / "rows.csv", rows)
    (tmp_path / "classes.txt").write_text("# name,category\n" + "\n".join(CLASSES) + "\n")
    return tmp_path, rows


def check_read_back(info, rows):
    names = info.class_names
    for split in {r["split"] for r in rows}:
        got = {r["id"]: r for r in iterate_label_lists(info.split_files(split))}
        want = [r for r in rows if r["split"] == split]
        assert sorted(got) == sorted(r["id"] for r in want)
        for r in want:
            for column in ("noisy", "verified_pos", "verified_neg"):
                expected = sorted(names.index(n) for n in r[column].split(";") if n)
                assert got[r["id"]][column] == expected, (r["id"], column)


def test_csv_of_pngs_reads_back_exactly_through_the_binary(png_manifest):
    root, rows = png_manifest
    out = root / "out"
    proc = run_cli(
        "make_tfrecords",
        *manifest_args(root),
        f"--output_dir={out}",
        "--num_shards=2",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert "noisy=12" in proc.stdout and "0 bad rows skipped" in proc.stdout
    info = load_dataset_info(str(out))
    assert [c.category for c in info.classes] == ["animal", "animal", "vehicle", "vehicle"]
    assert info.multi_label
    check_read_back(info, rows)
    # The image bytes are the PNG files themselves.
    import tensorflow as tf

    first = next(iter(tf.data.TFRecordDataset(info.split_files("clean")[:1])))
    example = tf.train.Example.FromString(first.numpy())
    image_id = example.features.feature["image/id"].bytes_list.value[0].decode()
    path = next(r["image"] for r in rows if r["id"] == image_id)
    assert example.features.feature["image/encoded"].bytes_list.value[0] == (root / path).read_bytes()


def test_jsonl_with_lists_and_default_split(tmp_path):
    paths = write_images(tmp_path, 4, fmt="JPEG")
    lines = [
        {"image": paths[0], "noisy": ["cat", "dog"]},
        {"image": paths[1], "noisy": "bus"},
        {"image": paths[2], "verified_pos": ["car"], "split": "clean"},
        {"image": paths[3]},
    ]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    conv = manifest.convert(str(tmp_path / "rows.jsonl"), str(tmp_path / "classes.txt"), image_root=str(tmp_path))
    info = write_dataset(conv, str(tmp_path / "out"), progress=False)
    got = {r["id"]: r for r in iterate_label_lists(info.split_files("noisy"))}
    assert got[paths[0]]["noisy"] == [0, 1] and got[paths[1]]["noisy"] == [3] and got[paths[3]]["noisy"] == []
    (clean,) = iterate_label_lists(info.split_files("clean"))
    assert clean["verified_pos"] == [2] and clean["verified_neg"] == []


def test_single_label_manifest_verifies_the_other_classes_absent(tmp_path):
    paths = write_images(tmp_path, 2)
    write_csv(
        tmp_path / "rows.csv",
        [
            {"image": paths[0], "noisy": "cat", "verified_pos": "dog", "split": "clean"},
            {"image": paths[1], "noisy": "cat;dog"},
        ],
    )
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    conv = manifest.convert(str(tmp_path / "rows.csv"), str(tmp_path / "classes.txt"), str(tmp_path), multi_label=False)
    info = write_dataset(conv, str(tmp_path / "out"), skip_bad=True, progress=False)
    assert not info.multi_label
    (clean,) = iterate_label_lists(info.split_files("clean"))
    assert clean["verified_pos"] == [1] and clean["verified_neg"] == [0, 2, 3]
    assert info.skipped["count"] == 1 and "single-label" in info.skipped["rows"][0]["reason"]


def test_corrupt_image_is_named_by_row_and_skipped_with_skip_bad(png_manifest):
    root, rows = png_manifest
    (root / rows[6]["image"]).write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    args = [*manifest_args(root), "--quiet"]
    proc = run_cli("make_tfrecords", *args, f"--output_dir={root / 'out'}")
    assert proc.returncode == 1
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("nlr-make-tfrecords: error:")]
    assert len(error_lines) == 1
    assert f"rows.csv:8: {root / rows[6]['image']}: cannot decode image" in error_lines[0]
    assert not (root / "out").exists()

    proc = run_cli("make_tfrecords", *args, f"--output_dir={root / 'out'}", "--skip_bad")
    assert proc.returncode == 0, proc.stderr
    assert "1 bad rows skipped" in proc.stdout
    info = load_dataset_info(str(root / "out"))
    assert info.skipped["count"] == 1 and info.skipped["rows"][0]["origin"].endswith("rows.csv:8")
    check_read_back(info, rows[:6] + rows[7:])


def test_unknown_class_missing_image_and_malformed_rows(png_manifest):
    root, rows = png_manifest
    text = (root / "rows.csv").read_text().splitlines()
    text[2] = text[2].replace("cat", "kangaroo") if "cat" in text[2] else "img/000.png,kangaroo,,,noisy,x"
    text[3] = "img/missing.png,cat,,,noisy,missing-id"
    text[4] = "img/004.png,cat,,,noisy,extra,field"
    text[5] = "img/005.png,cat"
    (root / "rows.csv").write_text("\n".join(text) + "\n")
    conv = manifest.convert(str(root / "rows.csv"), str(root / "classes.txt"), str(root))
    with pytest.raises(BadInputError, match=r"rows.csv:3: unknown class 'kangaroo' in column"):
        write_dataset(conv, str(root / "out"), progress=False)
    conv = manifest.convert(str(root / "rows.csv"), str(root / "classes.txt"), str(root))
    info = write_dataset(conv, str(root / "out"), skip_bad=True, progress=False)
    reasons = {r["origin"].rsplit(":", 1)[1]: r["reason"] for r in info.skipped["rows"]}
    assert set(reasons) == {"3", "4", "5", "6"}
    assert "image file not found" in reasons["4"]
    assert "expected 6 columns" in reasons["5"] and "got 7" in reasons["5"]
    assert "expected 6 columns" in reasons["6"] and "got 2" in reasons["6"]
    assert sum(s.num_records for s in info.splits.values()) == len(rows) - 4


def test_bad_inputs_as_a_whole(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ncat\n")
    (tmp_path / "rows.csv").write_text("path,noisy\nx.png,cat\n")
    with pytest.raises(ConversionError, match="listed twice"):
        manifest.convert(str(tmp_path / "rows.csv"), str(tmp_path / "classes.txt"))
    (tmp_path / "classes.txt").write_text("cat\n")
    with pytest.raises(ConversionError, match="lacks the column"):
        list(manifest.convert(str(tmp_path / "rows.csv"), str(tmp_path / "classes.txt")).items)
    with pytest.raises(ConversionError, match="manifest not found"):
        manifest.convert(str(tmp_path / "nope.csv"), str(tmp_path / "classes.txt"))
    proc = run_cli("make_tfrecords", "--source=manifest", f"--output_dir={tmp_path / 'o'}")
    assert proc.returncode == 1 and "needs --input, --classes" in proc.stderr
    proc = run_cli("make_tfrecords", "--source=nonsense", f"--output_dir={tmp_path / 'o'}")
    assert proc.returncode != 0 and "source" in proc.stderr


@pytest.mark.slow
def test_text_that_is_not_utf8_is_named_by_file_line_and_byte_and_read_with_encoding(tmp_path):
    paths = write_images(tmp_path, 3)
    (tmp_path / "classes.txt").write_bytes("cat\ndog\ncar\nbus\ncaf\xe9\n".encode("latin-1"))
    rows = manifest_rows(paths)
    rows[1]["noisy"] = "caf\xe9"
    with open(tmp_path / "rows.csv", "w", newline="", encoding="latin-1") as f:
        w = csv.DictWriter(f, fieldnames=["image", "noisy", "verified_pos", "verified_neg", "split", "id"])
        w.writeheader()
        w.writerows(rows)
    args = ["--source=manifest", f"--input={tmp_path / 'rows.csv'}", f"--image_root={tmp_path}", "--quiet"]
    proc = run_cli("make_tfrecords", *args, f"--classes={tmp_path / 'classes.txt'}", f"--output_dir={tmp_path / 'a'}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'classes.txt'}:5: byte 19 (b'\\xe9') is not valid utf-8" in proc.stderr
    assert "--encoding" in proc.stderr and not (tmp_path / "a").exists()
    (tmp_path / "classes.txt").write_text("cat\ndog\ncar\nbus\ncaf\xe9\n", encoding="utf-8")
    proc = run_cli("make_tfrecords", *args, f"--classes={tmp_path / 'classes.txt'}", f"--output_dir={tmp_path / 'a'}")
    assert proc.returncode == 1 and f"{tmp_path / 'rows.csv'}:3: byte" in proc.stderr
    (tmp_path / "classes.txt").write_bytes("cat\ndog\ncar\nbus\ncaf\xe9\n".encode("latin-1"))
    proc = run_cli(
        "make_tfrecords",
        *args,
        f"--classes={tmp_path / 'classes.txt'}",
        f"--output_dir={tmp_path / 'a'}",
        "--encoding=latin-1",
    )
    assert proc.returncode == 0, proc.stderr
    info = load_dataset_info(str(tmp_path / "a"))
    assert "caf\xe9" in info.class_names


def test_a_split_name_the_methods_do_not_read_is_a_bad_row_unless_listed(tmp_path):
    paths = write_images(tmp_path, 5)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    rows = manifest_rows(paths)
    rows[0]["split"] = "training"
    write_csv(tmp_path / "rows.csv", rows)
    convert = lambda **kw: manifest.convert(str(tmp_path / "rows.csv"), str(tmp_path / "classes.txt"), **kw)  # noqa: E731
    bad = [item for item in convert().items if not hasattr(item, "split")]
    assert [b.origin for b in bad] == [f"{tmp_path / 'rows.csv'}:2"]
    assert "unknown split 'training': expected one of clean, noisy, test, val" in bad[0].reason
    assert [item.split for item in convert(extra_splits=("training",)).items][0] == "training"
    with pytest.raises(ConversionError, match="--default_split=train is not one of"):
        convert(default_split="train")


def test_randomly_corrupted_images_are_exactly_the_rows_skipped(tmp_path):
    """5 % of 200 PNGs, picked by a seeded RNG, cut short, emptied or overwritten with random bytes."""
    rng = np.random.default_rng(20)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(200):
        rows.append({"image": f"img/{i:03d}.png", "noisy": CLASSES[i % len(CLASSES)].split(",")[0], "id": f"id-{i}"})
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / rows[-1]["image"])
    write_csv(tmp_path / "rows.csv", rows, fields=("image", "noisy", "id"))
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    corrupted = sorted(rng.choice(len(rows), size=len(rows) // 20, replace=False).tolist())
    kinds = dict(zip(corrupted, rng.permutation(np.arange(len(corrupted)) % 3).tolist()))
    for i, kind in kinds.items():
        path = tmp_path / rows[i]["image"]
        data = path.read_bytes()
        path.write_bytes([data[: rng.integers(1, len(data))], b"", rng.bytes(len(data))][kind])
    csv_path = tmp_path / "rows.csv"
    convert = lambda: manifest.convert(str(csv_path), str(tmp_path / "classes.txt"), str(tmp_path))  # noqa: E731
    origin = {i: f"{csv_path}:{i + 2}" for i in corrupted}

    message = fails_in_one_line(convert(), tmp_path / "out")
    first = corrupted[0]  # rows are written in order
    assert message.startswith(f"{origin[first]}: {tmp_path / rows[first]['image']}: ")

    info = skips(convert(), tmp_path / "out")
    skipped = dict(skipped_rows(info))
    assert set(skipped) == set(origin.values())
    for i in corrupted:
        reason = ["cannot decode image: ", "image is empty (0 bytes)", "cannot decode image: "][kinds[i]]
        assert skipped[origin[i]].startswith(f"{tmp_path / rows[i]['image']}: {reason}")
    assert sorted(info.splits) == ["noisy"] and info.splits["noisy"].num_records == 190
    written = {r["id"]: r["noisy"] for r in iterate_label_lists(info.split_files("noisy"))}
    assert written == {r["id"]: [i % len(CLASSES)] for i, r in enumerate(rows) if i not in kinds}


def _lines_with_offsets(path):
    offset, lines = 0, []
    for lineno, raw in enumerate(path.read_bytes().splitlines(keepends=True), 1):
        lines.append((lineno, offset, raw))
        offset += len(raw)
    return lines


def test_rows_parsed_one_line_at_a_time_are_the_rows_streamed(tmp_path):
    """The Beam workers' way in (`parse_line`) gives the items the local stream gives: quoting, CRLF, a BOM."""
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    text = (
        "\ufeffimage,noisy,split,id\r\n"
        'img/a.png,"cat;dog",noisy,"a, with a comma"\r\n'
        '"img/b ""quoted"".png",bus,clean,b\r\n'
        "\r\n"
        "img/c.png,kangaroo,noisy,c\r\n"
        "img/d.png,cat\r\n"
        "img/e.png,,val,e"
    )
    (tmp_path / "rows.csv").write_bytes(text.encode("utf-8"))
    conv = manifest.convert(str(tmp_path / "rows.csv"), str(tmp_path / "classes.txt"), image_root="root")
    streamed = list(conv.items)
    rows = conv.items.check()
    by_line = [rows.parse_line(*line) for line in _lines_with_offsets(tmp_path / "rows.csv")[rows.skip_lines :]]
    assert [item for item in by_line if item is not None] == streamed
    assert [getattr(item, "id", None) for item in streamed] == ["a, with a comma", "b", None, None, "e"]
    assert streamed[1].image_path == 'root/img/b "quoted".png' and streamed[0].noisy == [0, 1]
    assert streamed[2].origin.endswith("rows.csv:5") and "kangaroo" in streamed[2].reason

    (tmp_path / "rows.jsonl").write_text('{"image": "x.png", "noisy": ["cat"]}\n\n[1]\n{"image": "y.png"')
    conv = manifest.convert(str(tmp_path / "rows.jsonl"), str(tmp_path / "classes.txt"))
    by_line = [conv.items.parse_line(*line) for line in _lines_with_offsets(tmp_path / "rows.jsonl")]
    assert [item for item in by_line if item is not None] == list(conv.items)


def test_a_line_break_in_a_quoted_field_is_read_locally_and_refused_line_by_line(tmp_path):
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (tmp_path / "rows.csv").write_text('image,noisy,id\nimg/a.png,cat,"two\nlines"\nimg/b.png,dog,b\n')
    conv = manifest.convert(str(tmp_path / "rows.csv"), str(tmp_path / "classes.txt"))
    assert [item.id for item in conv.items] == ["two\nlines", "b"]
    with pytest.raises(ConversionError, match=r"rows.csv:2: a quoted field runs past the end of the line"):
        conv.items.parse_line(*_lines_with_offsets(tmp_path / "rows.csv")[1])
    (tmp_path / "rows.csv").write_bytes(b"image,noisy\nimg/a.png,caf\xe9\n")
    conv = manifest.convert(str(tmp_path / "rows.csv"), str(tmp_path / "classes.txt"))
    with pytest.raises(ConversionError) as streamed:
        list(conv.items)
    with pytest.raises(ConversionError) as by_line:
        conv.items.parse_line(*_lines_with_offsets(tmp_path / "rows.csv")[1])
    assert str(by_line.value) == str(streamed.value)
    assert "rows.csv:2: byte 25 (b'\\xe9') is not valid utf-8" in str(by_line.value)
