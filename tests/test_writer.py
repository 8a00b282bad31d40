"""The writer: sharding, exact read-back, atomicity, bad rows."""

import json
import os
import socket

import numpy as np
import pytest
from conftest import toy_records, write_toy_dataset

from nlr_tf.data.output_dir import OutputDirError, stale_incomplete_dirs
from nlr_tf.data.parsing import iterate_label_lists
from nlr_tf.data.schema import ClassInfo, DatasetError, load_dataset_info
from tfrecords_tools.records import BadRow, Conversion, ConversionError, Record
from tfrecords_tools.writer import BadInputError, write_dataset

CLASSES = [ClassInfo(id=f"c{i}", name=f"class_{i}") for i in range(5)]


def _conversion(items):
    return Conversion(classes=CLASSES, multi_label=True, items=items, source="test")


def test_round_trip_is_exact_and_sharded(tmp_path):
    info, records = write_toy_dataset(tmp_path / "d", {"noisy": 25, "clean": 7, "val": 2}, num_shards=4, with_true=True)
    assert info.splits["noisy"].num_shards == 4
    assert info.splits["noisy"].files[0] == "noisy-00000-of-00004.tfrecord"
    assert info.splits["val"].num_shards == 2  # fewer records than shards
    reloaded = load_dataset_info(str(tmp_path / "d"))
    assert reloaded.num_classes == 5 and reloaded.class_names == [f"class_{i}" for i in range(5)]
    for split in ("noisy", "clean", "val"):
        got = {r["id"]: r for r in iterate_label_lists(reloaded.split_files(split))}
        want = [r for r in records if r.split == split]
        assert sorted(got) == sorted(r.id for r in want)
        for r in want:
            assert got[r.id]["noisy"] == sorted(r.noisy)
            assert got[r.id]["verified_pos"] == sorted(r.verified_pos)
            assert got[r.id]["verified_neg"] == sorted(r.verified_neg)
            assert got[r.id]["true"] == sorted(r.true)
    stats = reloaded.provenance["noise_statistics"]["noisy"]
    assert stats["num_records"] == 25 and stats["records_with_truth"] == 25
    assert reloaded.provenance["source"] == "toy"


def test_output_is_deterministic(tmp_path):
    write_toy_dataset(tmp_path / "a", {"noisy": 30, "clean": 5}, num_shards=3)
    write_toy_dataset(tmp_path / "b", {"noisy": 30, "clean": 5}, num_shards=3)
    for name in sorted(os.listdir(tmp_path / "a")):
        if name.endswith(".tfrecord"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path):
    write_toy_dataset(tmp_path / "d", {"noisy": 5})
    with pytest.raises(OutputDirError, match="already exists"):
        write_dataset(_conversion(toy_records({"noisy": 3})), str(tmp_path / "d"), progress=False)
    info = write_dataset(_conversion(toy_records({"noisy": 3})), str(tmp_path / "d"), overwrite=True, progress=False)
    assert info.splits["noisy"].num_records == 3
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_failed_run_leaves_nothing_that_looks_complete(tmp_path):
    records = toy_records({"noisy": 40})
    records[30] = BadRow("rows.csv:31", "unknown class 'cat' in column 'noisy'")
    with pytest.raises(BadInputError, match=r"rows.csv:31: unknown class 'cat'"):
        write_dataset(_conversion(records), str(tmp_path / "d"), progress=False)
    assert os.listdir(tmp_path) == []
    with pytest.raises(DatasetError, match="not found"):
        load_dataset_info(str(tmp_path / "d"))


def test_interrupted_run_cleans_up(tmp_path):
    def items():
        yield from toy_records({"noisy": 10})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(_conversion(items()), str(tmp_path / "d"), progress=False)
    assert os.listdir(tmp_path) == []


def test_skip_bad_counts_and_lists_every_kind_of_bad_row(tmp_path):
    records = toy_records({"noisy": 10})
    corrupt = Record("noisy", "corrupt", noisy=[1], image_bytes=b"\x89PNG\r\n\x1a\n garbage", origin="m.csv:12")
    missing = Record("noisy", "missing", noisy=[1], image_path=str(tmp_path / "nope.jpg"), origin="m.csv:13")
    out_of_range = Record("noisy", "oor", noisy=[7], image_array=np.zeros((4, 4), np.uint8), origin="m.csv:14")
    contradictory = Record(
        "clean", "both", verified_pos=[1], verified_neg=[1], image_array=np.zeros((4, 4), np.uint8), origin="m.csv:15"
    )
    duplicate = Record("noisy", records[0].id, image_array=np.zeros((4, 4), np.uint8), origin="m.csv:16")
    malformed = BadRow("m.csv:17", "3 fields, the header has 4")
    items = records + [corrupt, missing, out_of_range, contradictory, duplicate, malformed]
    info = write_dataset(_conversion(items), str(tmp_path / "d"), skip_bad=True, progress=False)
    assert info.splits["noisy"].num_records == 10
    assert "clean" not in info.splits
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["skipped"]["count"] == 6
    reasons = {row["origin"]: row["reason"] for row in meta["skipped"]["rows"]}
    assert "cannot decode image" in reasons["m.csv:12"]
    assert "image file not found" in reasons["m.csv:13"]
    assert "out of range" in reasons["m.csv:14"]
    assert "verified both present and absent" in reasons["m.csv:15"]
    assert "duplicate image id" in reasons["m.csv:16"]
    assert reasons["m.csv:17"] == "3 fields, the header has 4"


def test_truncated_jpeg_is_caught(tmp_path):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    record = Record("noisy", "t", noisy=[0], image_bytes=buf.getvalue()[:-200], origin="rows.csv:2")
    with pytest.raises(BadInputError, match="rows.csv:2: cannot decode image"):
        write_dataset(_conversion([record]), str(tmp_path / "d"), progress=False)


def test_nothing_written_is_an_error(tmp_path):
    with pytest.raises(ConversionError, match="no record"):
        write_dataset(_conversion([BadRow("x:1", "bad")]), str(tmp_path / "d"), skip_bad=True, progress=False)
    assert os.listdir(tmp_path) == []


def test_load_rejects_inconsistent_metadata(tmp_path):
    info, _ = write_toy_dataset(tmp_path / "d", {"noisy": 5})
    (tmp_path / "d" / info.splits["noisy"].files[0]).unlink()
    with pytest.raises(DatasetError, match="missing its shard"):
        load_dataset_info(str(tmp_path / "d"))
    label_map = json.loads((tmp_path / "d" / "label_map.json").read_text())
    del label_map["4"]
    (tmp_path / "d" / "label_map.json").write_text(json.dumps(label_map))
    with pytest.raises(DatasetError, match="num_classes=5"):
        load_dataset_info(str(tmp_path / "d"), check_files=False)


def test_a_killed_conversion_leaves_a_folder_the_next_run_removes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from cli_util import ROOT

    out = tmp_path / "digits"
    args = [sys.executable, "-m", "nlr_tf.cli.make_tfrecords", "--source=digits_mosaic", f"--output_dir={out}"]
    args += ["--num_train=2000", "--num_val=100", "--num_test=100", "--quiet", "--num_workers=1"]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not stale_incomplete_dirs(str(out)) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the conversion ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [left] = stale_incomplete_dirs(str(out))
    assert not out.exists()

    # Another run into the same folder, still going (this process): reported, kept; --overwrite removes it.
    alive = tmp_path / f".digits.incomplete-{socket.gethostname().replace('-', '_')}-{os.getpid()}-0000beef"
    alive.mkdir()
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"removed {left}" in done.stderr and "the unfinished output of an interrupted earlier run" in done.stderr
    assert f"{alive} (0.0 MB) is the unfinished output of another run" in done.stderr
    assert stale_incomplete_dirs(str(out)) == [str(alive)] and (out / "dataset.json").is_file()
    done = subprocess.run(args + ["--overwrite"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and stale_incomplete_dirs(str(out)) == []


def test_skipped_rows_are_all_counted_and_the_first_listed(tmp_path, monkeypatch):
    from tfrecords_tools import writer

    monkeypatch.setattr(writer, "MAX_LISTED_BAD_ROWS", 3)
    bad = [BadRow(f"m.csv:{i}", "unknown class 'cat' in column 'noisy'") for i in range(2, 7)]
    items = toy_records({"noisy": 4}) + bad + [bad[0]]  # a row met twice is one bad row
    info = write_dataset(_conversion(items), str(tmp_path / "d"), skip_bad=True, progress=False)
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["skipped"] == info.skipped
    assert info.skipped["count"] == 5 and info.skipped["not_listed"] == 2
    assert [row["origin"] for row in info.skipped["rows"]] == ["m.csv:2", "m.csv:3", "m.csv:4"]


def test_label_stats_merged_equal_the_stats_of_all_records():
    from nlr_tf.data.label_stats import LabelStats

    records = toy_records({"noisy": 30, "clean": 20}, num_classes=6, with_true=False, verify_share=0.5)
    records += toy_records({"val": 15}, num_classes=6, seed=1, with_true=True)
    whole, parts = LabelStats(6), [LabelStats(6) for _ in range(3)]
    for i, r in enumerate(records):
        whole.add(r.noisy, r.verified_pos, r.verified_neg, r.true)
        parts[i % 3].add(r.noisy, r.verified_pos, r.verified_neg, r.true)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.summary() == whole.summary()
    for name, value in vars(whole).items():
        np.testing.assert_array_equal(getattr(merged, name), value, err_msg=name)
    assert LabelStats(6).merge(whole).summary() == whole.summary()
    with pytest.raises(ValueError, match="of 5 classes into 6 classes"):
        whole.merge(LabelStats(5))
