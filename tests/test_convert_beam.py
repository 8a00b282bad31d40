"""The conversion as an Apache Beam pipeline (DirectRunner) writes what the local writer writes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from cli_util import ROOT, manifest_args, run_cli
from fault_util import cli_error_line, nothing_written
from test_convert_manifest import CLASSES, check_read_back, manifest_rows, write_csv, write_images

import tfrecords_tools
from nlr_tf.data.schema import ClassInfo, load_dataset_info
from tfrecords_tools import beam_writer, manifest, writer
from tfrecords_tools.records import BadRow, Conversion, ConversionError, Record
from tfrecords_tools.writer import BadInputError, write_dataset

TWO_PROCESSES = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
NUM_SHARDS = 4


def _manifest_with_faults(root):
    """30 PNG rows with an unknown class, a malformed row, a corrupt image and a duplicate id."""
    rows = manifest_rows(write_images(root, 30))
    rows[4]["noisy"] = "kangaroo"
    rows[9]["image"] = "img/009.png,extra"  # one field too many once written
    (root / rows[13]["image"]).write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    rows[21]["id"], rows[21]["split"] = rows[6]["id"], rows[6]["split"]  # the same id twice in a split
    assert rows[22]["split"] != rows[23]["split"]
    rows[22]["id"] = rows[23]["id"]  # the same id in two splits: fine
    write_csv(root / "rows.csv", rows)
    text = (root / "rows.csv").read_text().replace('"img/009.png,extra"', "img/009.png,extra")
    (root / "rows.csv").write_text(text)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return rows


def _convert(root):
    return manifest.convert(str(root / "rows.csv"), str(root / "classes.txt"), image_root=str(root))


def _shard_files(info):
    return [f for split in info.splits.values() for f in split.files]


def _examples(info, split):
    return sorted(r.numpy() for r in tf.data.TFRecordDataset(info.split_files(split)))


def _comparable(path):
    """dataset.json without what legitimately differs between the writers: time, arguments, runner, shard files."""
    meta = json.loads((path / "dataset.json").read_text())
    for key in ("created", "arguments", "beam"):
        meta["provenance"].pop(key, None)
    meta["splits"] = {name: split["num_records"] for name, split in meta["splits"].items()}
    return meta


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory):
    """The faulty manifest written by the local writer and by Beam in two worker processes, in 300-byte ranges."""
    root = tmp_path_factory.mktemp("manifest")
    _manifest_with_faults(root)
    common = dict(num_shards=NUM_SHARDS, skip_bad=True, max_image_side=10, progress=False)
    local = write_dataset(_convert(root), str(root / "local"), **common)
    mp = pytest.MonkeyPatch()
    mp.setattr(beam_writer, "RANGE_BYTES", 300)  # several ranges, read by both workers
    try:
        beam = write_dataset(
            _convert(root), str(root / "beam"), runner="DirectRunner", beam_options=TWO_PROCESSES, **common
        )
    finally:
        mp.undo()
    return root, local, beam


def test_local_and_beam_write_the_same_examples_and_dataset_json(both_ways):
    root, local, beam = both_ways
    assert sorted(beam.splits) == sorted(local.splits) == ["clean", "noisy", "val"]
    for split in local.splits:
        assert _examples(beam, split) == _examples(local, split), split
    assert _comparable(root / "beam") == _comparable(root / "local")
    assert (root / "beam" / "label_map.json").read_text() == (root / "local" / "label_map.json").read_text()
    reasons = {row["origin"].rsplit(":", 1)[1]: row["reason"] for row in beam.skipped["rows"]}
    assert sorted(reasons, key=int) == ["6", "11", "15", "23"] and beam.skipped["not_listed"] == 0
    assert "kangaroo" in reasons["6"] and "expected 6 columns" in reasons["11"]
    assert "cannot decode image" in reasons["15"] and "duplicate image id 'id-6'" in reasons["23"]
    assert beam.provenance["beam"]["runner"] == "DirectRunner"
    assert beam.provenance["beam"]["options"] == TWO_PROCESSES
    assert sorted(os.listdir(root / "beam")) == sorted(["dataset.json", "label_map.json", *_shard_files(beam)])


def test_the_shard_of_an_id_does_not_depend_on_worker_count(both_ways, tmp_path):
    root, _, two_workers = both_ways
    # The hash is SHA-256 of split/id, not Python's per-process salted hash().
    assert [beam_writer.shard_of("noisy", f"id-{i}", 4) for i in range(10)] == [2, 2, 2, 2, 2, 2, 1, 3, 2, 1]
    for split, info in two_workers.splits.items():
        buckets = []
        for name in info.files:
            ids = [
                tf.train.Example.FromString(r.numpy()).features.feature["image/id"].bytes_list.value[0].decode()
                for r in tf.data.TFRecordDataset(os.path.join(two_workers.path, name))
            ]
            assert ids == sorted(ids)
            (bucket,) = {beam_writer.shard_of(split, i, NUM_SHARDS) for i in ids}
            buckets.append(bucket)
        assert buckets == sorted(buckets)
    one_worker = write_dataset(
        _convert(root), str(tmp_path / "one"), runner="DirectRunner", num_shards=NUM_SHARDS, skip_bad=True,
        max_image_side=10, progress=False,
    )  # fmt: skip
    assert _shard_files(one_worker) == _shard_files(two_workers)
    for name in _shard_files(one_worker):
        assert (tmp_path / "one" / name).read_bytes() == (root / "beam" / name).read_bytes(), name


def test_the_binary_converts_with_a_runner(tmp_path):
    rows = manifest_rows(write_images(tmp_path, 20))
    write_csv(tmp_path / "rows.csv", rows)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "out"
    options = "--direct_num_workers=1 --s3_secret_access_key='hunter 2'"
    proc = run_cli(
        "make_tfrecords", *manifest_args(tmp_path), f"--output_dir={out}", "--num_shards=2", "--quiet",
        "--runner=DirectRunner", f"--beam_options={options}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "noisy=12" in proc.stdout and "0 bad rows skipped" in proc.stdout
    info = load_dataset_info(str(out))
    check_read_back(info, rows)
    assert info.provenance["arguments"]["runner"] == "DirectRunner"
    assert info.provenance["beam"]["options"] == ["--direct_num_workers=1", "--s3_secret_access_key=<redacted>"]
    assert "hunter" not in (out / "dataset.json").read_text()


def _toy_conversion(items):
    classes = [ClassInfo(id=f"c{i}", name=f"class_{i}") for i in range(3)]
    return Conversion(classes=classes, multi_label=True, items=items, source="toy")


def _toy(split, i, **labels):
    image = np.full((4, 5, 3), i, np.uint8)
    return Record(split, f"{split}-{i}", image_array=image, origin=f"toy:{i}", **{"noisy": [i % 3], **labels})


def test_a_failing_pipeline_and_a_bad_row_leave_no_output_folder(tmp_path, monkeypatch):
    # The launcher stages these items (the path of every source but manifest); a worker then fails on a label.
    items = [_toy("noisy", i) for i in range(6)] + [_toy("noisy", 6, noisy=["not a class index"])]
    with pytest.raises(Exception, match="not a class index"):
        write_dataset(_toy_conversion(items), str(tmp_path / "d"), runner="DirectRunner", progress=False)
    assert nothing_written(tmp_path / "d")

    # Bad rows in the order the source holds them (not the order of their origins), as the local writer has them.
    items = [_toy("noisy", i) for i in range(6)] + [_toy("val", 1, noisy=[7]), BadRow("toy:0", "bad")]
    reason = "noisy class index 7 is out of range for 3 classes"
    for runner in ("DirectRunner", None):
        with pytest.raises(BadInputError, match=f"^toy:1: {reason}"):
            write_dataset(_toy_conversion(items), str(tmp_path / "d"), runner=runner, progress=False)
        assert nothing_written(tmp_path / "d")
    monkeypatch.setattr(writer, "MAX_LISTED_BAD_ROWS", 1)
    for runner, out in (("DirectRunner", "d"), (None, "local")):
        info = write_dataset(_toy_conversion(items), str(tmp_path / out), runner=runner, skip_bad=True, progress=False)
        assert info.splits["noisy"].num_records == 6 and "val" not in info.splits
        assert info.skipped == {"count": 2, "rows": [{"origin": "toy:1", "reason": reason}], "not_listed": 1}

    (tmp_path / "classes.txt").write_text("cat\n")
    (tmp_path / "rows.csv").write_text('image,noisy,id\na.png,cat,"two\nlines"\n')
    with pytest.raises(ConversionError, match="rows.csv:2: a quoted field runs past the end of the line"):
        write_dataset(_convert(tmp_path), str(tmp_path / "q"), runner="DirectRunner", skip_bad=True)
    assert nothing_written(tmp_path / "q")


def test_line_ranges_cover_every_line_once_with_its_number_and_offset(tmp_path, monkeypatch):
    path = tmp_path / "rows.csv"
    data = b"header\r\n" + b"".join(b"x" * (i % 7) + b"\r\n" * (i % 3 > 0) + b"\n" for i in range(40)) + b"last"
    path.write_bytes(data)
    expected, offset = [], 0
    for lineno, raw in enumerate(data.splitlines(keepends=True), 1):
        expected.append((lineno, offset, raw))
        offset += len(raw)
    for size in (1, 2, 3, 5, 8, 13, 64, len(data) - 1, len(data), 1 << 20):
        monkeypatch.setattr(beam_writer, "RANGE_BYTES", size)
        ranges = beam_writer._line_ranges(str(path))
        first = beam_writer._first_line_numbers([beam_writer._count_lines(r, str(path)) for r in ranges])
        got = [line for r in ranges for line in beam_writer._read_lines(r, str(path), first, 1)]
        assert got == expected[1:], size


@pytest.mark.parametrize(
    "options, message",
    [
        ("--no_such_option=1", "Beam has no option --no_such_option"),
        ("--direct_num_workers=two", "argument --direct_num_workers: invalid int value: 'two'"),
        ("--runner=DataflowRunner", "must not hold --runner: pass the runner as --runner"),
        ("stray --direct_num_workers=2", "'stray' is not an option"),
        ("--temp_location='gs://b/t", "cannot be split into options: No closing quotation"),
    ],
)
def test_bad_beam_options_are_one_line_errors(options, message):
    with pytest.raises(ConversionError, match=message) as raised:
        beam_writer.pipeline_options("DirectRunner", options)
    assert "\n" not in str(raised.value)


def test_the_binary_names_bad_beam_options_and_a_missing_apache_beam(tmp_path, monkeypatch):
    (tmp_path / "classes.txt").write_text("cat\n")
    write_csv(tmp_path / "rows.csv", [], fields=("image", "noisy"))
    args = [*manifest_args(tmp_path), f"--output_dir={tmp_path / 'out'}", "--runner=DirectRunner"]
    proc = run_cli("make_tfrecords", *args, "--beam_options=--no_such_option=1")
    assert cli_error_line(proc) == "--beam_options: Beam has no option --no_such_option"
    proc = run_cli("make_tfrecords", *args[:-1], "--beam_options=--direct_num_workers=2")
    assert proc.returncode == 1 and "FATAL Flags parsing error: " in proc.stderr
    assert proc.stderr.splitlines()[-2].endswith(": --beam_options needs --runner")
    assert nothing_written(tmp_path / "out")

    # Without apache-beam: the library says so, and so does the binary, in one line.
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    monkeypatch.delitem(sys.modules, "tfrecords_tools.beam_writer")
    monkeypatch.delattr(tfrecords_tools, "beam_writer")
    with pytest.raises(ConversionError, match=r"--runner=DirectRunner needs Apache Beam.*pip install 'nlr_tf\[beam\]'"):
        write_dataset(_toy_conversion([_toy("noisy", 1)]), str(tmp_path / "out"), runner="DirectRunner")
    code = "import sys; sys.modules['apache_beam'] = None; from nlr_tf.cli.make_tfrecords import run; run()"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    assert cli_error_line(proc).startswith("--runner=DirectRunner needs Apache Beam, which cannot be imported")
    assert nothing_written(tmp_path / "out")
