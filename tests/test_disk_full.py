"""A full disk: every binary stops with one line naming the path, status 1, and leaves nothing half-written that
looks complete; the same command, once space is freed, resumes (`nlr-train`) or starts over.

The disk is made full by `disk_full_util` (the writes under a folder fail as TensorFlow's POSIX filesystem fails them
on ENOSPC), in this process for `nlr-train` and in a subprocess for the binaries whose flags cannot live beside
nlr-train's.
"""

import errno
import os

import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from cli_util import manifest_args, noisy_run_args
from disk_full_util import TEMPSTATE, disk_full, run_cli_on_full_disk
from test_convert_manifest import png_manifest  # noqa: F401  (a fixture)
from test_resume import assert_same_run

from nlr_tf.cli import faults
from nlr_tf.cli import train as train_cli
from nlr_tf.data import files
from nlr_tf.data.schema import DATASET_JSON, load_dataset_info
from nlr_tf.training import model_dir as run_files
from tfrecords_tools import manifest
from tfrecords_tools.writer import write_dataset


def full_disk_line(binary: str, path: str) -> str:
    """The line a binary ends with when a write to `path` finds the disk full."""
    return (
        f"{binary}: error: out of disk space: {path}: no space left on device; "
        "free space and run the same command again"
    )


def assert_one_line(stderr: str, line: str) -> None:
    """`line` is the last line on stderr, with no traceback before it."""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == line, stderr[-3000:]


# === out_of_space ===
def _raised(write) -> BaseException:
    try:
        write()
    except Exception as e:  # noqa: BLE001
        return e
    raise AssertionError("the write did not fail")


def test_a_real_full_disk_is_named_by_its_path():
    """/dev/full refuses every write with ENOSPC: TensorFlow's error and Python's name it."""

    def gfile_write():
        with tf.io.gfile.GFile("/dev/full", "wb") as f:
            f.write(b"x" * 100)

    def python_write():  # a failed write() does not name its file: it is found among the frames' files
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 100)
            f.flush()

    tf_error = _raised(gfile_write)
    assert isinstance(tf_error, tf.errors.ResourceExhaustedError) and tf_error.message == (
        "/dev/full; No space left on device"
    )
    assert files.out_of_space(tf_error) == "/dev/full: no space left on device"
    assert files.out_of_space(_raised(python_write)) == "/dev/full: no space left on device"


def test_a_keras_model_saved_to_a_full_disk_is_named(tmp_path):
    """Keras writes model.keras with Python's own files, whose failed write names no file: the file is found."""
    import keras

    target = tmp_path / "model.keras"
    target.symlink_to("/dev/full")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(500)])
    assert files.out_of_space(_raised(lambda: model.save(str(target)))) == f"{target}: no space left on device"


def test_out_of_space_reads_oserrors_tf_errors_and_their_causes():
    assert files.out_of_space(OSError(errno.ENOSPC, "No space left on device", "/d/x")) == (
        "/d/x: no space left on device"
    )
    assert files.out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded", "/d/x")) == "/d/x: disk quota exceeded"
    assert files.out_of_space(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    kernel = tf.errors.ResourceExhaustedError(
        None,
        None,
        "{{function_node __wrapped__SaveV2_dtypes_3_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
        "/r/ckpt-10_temp/part-00000-of-00001.data-00000-of-00001.tempstate99; No space left on device [Op:SaveV2]",
    )
    assert files.out_of_space(kernel) == (
        "/r/ckpt-10_temp/part-00000-of-00001.data-00000-of-00001.tempstate99: no space left on device"
    )
    quota = tf.errors.ResourceExhaustedError(None, None, "gs-fuse/x.tfrecord; Disk quota exceeded")
    assert files.out_of_space(quota) == "gs-fuse/x.tfrecord: disk quota exceeded"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/d/y")
        except OSError as e:
            raise ValueError("could not save") from e
    except ValueError as e:
        assert files.out_of_space(e) == "/d/y: no space left on device"


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOENT, "No such file or directory", "/d/x"),
        OSError(errno.ENOMEM, "Cannot allocate memory"),
        tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[1000000,1000]"),
        tf.errors.NotFoundError(None, None, "/d/x; No such file or directory"),
        ValueError("No space left on device"),
        KeyboardInterrupt(),
    ],
    ids=["enoent", "enomem", "oom", "not_found", "value_error", "interrupt"],
)
def test_out_of_space_is_none_for_any_other_error(error):
    assert files.out_of_space(error) is None


def test_the_wrapper_ends_a_full_disk_in_one_line_and_lets_anything_else_through(capsys):
    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/d/x")

    def broken(argv):
        raise RuntimeError("a bug")

    assert faults.stop_on_full_disk("nlr-x", full)(["nlr-x"]) == faults.OUT_OF_SPACE_STATUS == 1
    assert capsys.readouterr().err == full_disk_line("nlr-x", "/d/x") + "\n"
    with pytest.raises(RuntimeError, match="a bug"):
        faults.stop_on_full_disk("nlr-x", broken)(["nlr-x"])


# === The binaries ===
def _train_args(run_dataset, model_dir) -> list[str]:
    """A noisy run of 15 steps, checkpointed every 5."""
    return noisy_run_args(run_dataset, model_dir, "--train_steps=15", "--log_steps=5", "--checkpoint_steps=5")


def _nlr_train(args, capsys) -> tuple[int, str]:
    """nlr-train's `run` on `args` in this process (its flags set afresh); returns its status and stderr."""
    capsys.readouterr()
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        with pytest.raises(SystemExit) as exited:
            train_cli.run(["nlr-train", *args])
    return exited.value.code or 0, capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(run_dataset, tmp_path_factory):
    """The run never interrupted (the model the other binaries use)."""
    model_dir = tmp_path_factory.mktemp("once") / "run"
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        with pytest.raises(SystemExit) as exited:
            train_cli.run(["nlr-train", *_train_args(run_dataset, model_dir)])
    assert not exited.value.code
    return str(model_dir)


def _checkpoint_size(prefix: str) -> int:
    return sum(files.size(p) for p in files.glob(prefix + ".*"))


def test_nlr_train_stops_at_a_checkpoint_the_disk_cannot_hold_and_resumes_from_the_one_before(
    run_dataset, trained, tmp_path, capsys
):
    """The disk holds ckpt-5 (and the `checkpoint` state naming it) but not ckpt-10: one line, status 1, ckpt-5 the
    checkpoint a restart restores; the same command then ends as the run never interrupted."""
    model_dir = tmp_path / "run"
    checkpoints = model_dir / "checkpoints"
    args = _train_args(run_dataset, model_dir)
    room = _checkpoint_size(os.path.join(trained, "checkpoints", "ckpt-5")) + 1024
    with disk_full(checkpoints, room) as disk:
        status, stderr = _nlr_train(args, capsys)
    partial = f"{checkpoints}/ckpt-10_temp/part-00000-of-00001.data-00000-of-00001.{TEMPSTATE}"
    assert disk.failed == [partial]
    assert status == 1
    assert_one_line(stderr, full_disk_line("nlr-train", partial))
    assert os.path.basename(tf.train.latest_checkpoint(str(checkpoints))) == "ckpt-5"
    assert sorted(os.listdir(checkpoints)) == [
        "checkpoint",
        "ckpt-10_temp",
        "ckpt-5.data-00000-of-00001",
        "ckpt-5.index",
    ]
    assert 0 < os.path.getsize(partial) < _checkpoint_size(str(checkpoints / "ckpt-5"))
    for name in (run_files.MODEL_FILE, run_files.RESULT_FILE, "job.lock"):
        assert not (model_dir / name).exists(), name

    status, stderr = _nlr_train(args, capsys)  # space freed: the same command
    assert status == 0, stderr[-3000:]
    results = [files.read_json(os.path.join(d, run_files.RESULT_FILE)) for d in (str(model_dir), trained)]
    assert_same_run(*results, str(model_dir), trained)


def _siblings(path) -> list[str]:
    """The names in the folder of `path` that are `path` or one of its temporary folders."""
    name = os.path.basename(str(path))
    return sorted(n for n in os.listdir(os.path.dirname(str(path))) if n == name or n.startswith(f".{name}."))


def test_nlr_make_tfrecords_leaves_the_complete_dataset_it_was_to_replace(png_manifest, tmp_path):  # noqa: F811
    root, _ = png_manifest
    out = tmp_path / "data" / "out"
    conversion = manifest.convert(str(root / "rows.csv"), str(root / "classes.txt"), str(root))
    write_dataset(conversion, str(out), num_shards=2, progress=False)
    before = (out / DATASET_JSON).read_text()

    proc, failed = run_cli_on_full_disk(
        "make_tfrecords",
        out.parent,
        3000,
        *manifest_args(root),
        f"--output_dir={out}",
        "--overwrite",
        "--num_shards=2",
        "--quiet",
    )
    assert len(failed) == 1 and os.path.dirname(failed[0]).startswith(f"{out.parent}/.out.incomplete-")
    assert os.path.basename(failed[0]) in ("noisy.part-00000", "noisy.part-00001")
    assert proc.returncode == 1
    assert_one_line(proc.stderr, full_disk_line("nlr-make-tfrecords", failed[0]))
    assert _siblings(out) == ["out"]
    assert (out / DATASET_JSON).read_text() == before
    assert load_dataset_info(str(out)).splits["noisy"].num_records == 12


def test_nlr_extract_features_leaves_no_cache(run_dataset, trained, tmp_path):
    out = tmp_path / "cache" / "features"
    proc, failed = run_cli_on_full_disk(
        "extract_features",
        out.parent,
        4000,
        f"--model_dir={trained}",
        f"--dataset={run_dataset}",
        f"--output_dir={out}",
        "--quiet",
    )
    assert len(failed) == 1 and os.path.dirname(failed[0]).startswith(f"{out.parent}/.features.incomplete-")
    assert proc.returncode == 1
    assert_one_line(proc.stderr, full_disk_line("nlr-extract-features", failed[0]))
    assert os.listdir(out.parent) == []


def test_nlr_eval_leaves_no_metrics_json(run_dataset, trained, tmp_path):
    """The disk fills up as metrics.json, written last, is written: neither it nor an earlier evaluation's is left
    beside the new PNGs (a reader takes metrics.json for a complete evaluation), nor any temporary file."""
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"mAP": 0.5}')  # an earlier evaluation's
    proc, failed = run_cli_on_full_disk(
        "evaluate",
        out,
        64,
        f"--model_dir={trained}",
        f"--dataset={run_dataset}",
        "--split=val",
        f"--output={out / 'metrics.json'}",
        full_from="*metrics.json*",
    )
    assert len(failed) == 1 and os.path.basename(failed[0]).startswith(".tmp-") and failed[0].endswith("-metrics.json")
    assert proc.returncode == 1
    assert_one_line(proc.stderr, full_disk_line("nlr-eval", failed[0]))
    left = sorted(n for n in os.listdir(out) if not n.startswith("events.out.tfevents."))
    assert "metrics.json" not in left and not [n for n in left if ".tmp" in n]
    assert "pr_curves.png" in left


def test_nlr_export_leaves_the_export_it_was_to_replace(trained, tmp_path):
    out = tmp_path / "exports" / "export"
    out.mkdir(parents=True)
    (out / "saved_model.pb").write_bytes(b"an earlier export")
    proc, failed = run_cli_on_full_disk(
        "export", out.parent, 0, f"--model_dir={trained}", f"--export_dir={out}", "--overwrite"
    )
    assert len(failed) == 1 and failed[0].startswith(f"{out.parent}/.export.incomplete-")
    assert proc.returncode == 1
    assert_one_line(proc.stderr, full_disk_line("nlr-export", failed[0]))
    assert _siblings(out) == ["export"]
    assert os.listdir(out) == ["saved_model.pb"] and (out / "saved_model.pb").read_bytes() == b"an earlier export"
