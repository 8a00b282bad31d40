"""Every path on a filesystem that is not the local disk: TensorFlow's `ram://`.

`ram://` lives inside one process, so this test calls, in one process, the
functions the binaries call: convert a manifest whose CSV, classes file and
images are on it, train, resume, evaluate, train heads on a feature cache
of the run's backbone, export with thresholds, and clean labels, every input and output
a `ram://` path. `ram://` renames a folder without its files (as object
stores have no folder rename), so the folders that appear only when complete
go through the file-by-file commit. Nothing may reach the local disk instead
(a path handled by `open` or `os` would make a folder named `ram:` in the
working folder).
"""

import csv
import io
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from nlr_tf.data import files
from nlr_tf.data.output_dir import atomic_output_dir
from nlr_tf.data.schema import load_dataset_info
from nlr_tf.evaluation.cleaned_output import CLEANED_LABELS_CSV, REPORT_JSON, SUSPECTS_CSV
from nlr_tf.evaluation.cleaning import clean_labels
from nlr_tf.evaluation.evaluator import EvalConfig, run_evaluation, run_thresholds
from nlr_tf.export.serving import THRESHOLDS_FILE, write_export
from nlr_tf.training import model_dir as run_files
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.trainer import train
from tfrecords_tools import manifest
from tfrecords_tools.writer import write_dataset

CLASSES = ["cat", "dog", "car", "bus"]
IMAGE_SIZE = 16


def _local_files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names)


def _write_manifest(root):
    """A manifest on `root` (a ram:// folder): 48 PNGs, the CSV with noisy, clean, val and test rows, the classes."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buffer, "PNG")
        files.write_bytes(f"{root}/img/{i:03d}.png", buffer.getvalue())
        split = ["noisy", "noisy", "noisy", "noisy", "clean", "val", "test", "noisy"][i % 8]
        labels = sorted(rng.choice(CLASSES, size=int(rng.integers(1, 3)), replace=False).tolist())
        verified = split != "noisy"
        rows.append(
            {
                "image": f"img/{i:03d}.png",
                "noisy": ";".join(labels),
                "verified_pos": ";".join(labels) if verified else "",
                "verified_neg": ";".join(c for c in CLASSES if c not in labels) if verified else "",
                "split": split,
                "id": f"id-{i}",
            }
        )
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(f"{root}/rows.csv", text.getvalue())
    files.write_text(f"{root}/classes.txt", "\n".join(CLASSES) + "\n")


def _config(root, model_dir, steps, **kwargs):
    return TrainConfig(
        method=kwargs.pop("method", "noisy"),
        dataset=f"{root}/data",
        model_dir=model_dir,
        backbone="small_cnn",
        image_size=IMAGE_SIZE,
        batch_size=10,
        train_steps=steps,
        checkpoint_steps=2,
        log_steps=2,
        eval_split="val",
        eval_steps=2,
        **kwargs,
    )


def test_convert_train_resume_evaluate_export_and_clean_on_ram_filesystem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path mistaken for a local one would land here
    root = f"ram://nlr-{uuid.uuid4().hex[:8]}"
    _write_manifest(root)

    # === Convert: manifest, classes and images on ram://, the dataset too ===
    conversion = manifest.convert(f"{root}/rows.csv", f"{root}/classes.txt", image_root=root)
    info = write_dataset(conversion, f"{root}/data", num_shards=2, progress=False, num_workers=2)
    assert info.path == f"{root}/data"
    info = load_dataset_info(f"{root}/data")
    assert {s: info.splits[s].num_records for s in info.splits} == {"noisy": 30, "clean": 6, "val": 6, "test": 6}
    assert not [n for n in files.listdir(root) if ".incomplete-" in n]  # the temporary folder is gone
    # Converting again without --overwrite is refused, with it replaces the dataset.
    with pytest.raises(ValueError, match="already exists"):
        write_dataset(manifest.convert(f"{root}/rows.csv", f"{root}/classes.txt", image_root=root), f"{root}/data")

    # === Train 4 steps, then resume to 6 ===
    run = f"{root}/runs/noisy"
    first = train(_config(root, run, 4))
    assert first["step"] == 4 and files.exists(f"{run}/checkpoints/ckpt-4.index")
    resumed = train(_config(root, run, 6))
    assert resumed["step"] == 6
    assert [e["step"] for e in run_files.read_eval_history(run)] == [2, 4, 6]  # the history kept across the resume
    assert files.isfile(f"{run}/{run_files.MODEL_FILE}") and files.isfile(f"{run}/{run_files.BACKBONE_WEIGHTS_FILE}")
    assert files.glob(f"{run}/train/events.out.tfevents.*")

    # === Evaluate ===
    outputs = run_evaluation(EvalConfig(model_dir=run, dataset=f"{root}/data", split="test", num_examples=4))
    assert outputs.output == run_files.metrics_path(run, "test") and files.isfile(outputs.output)
    assert files.read_json(outputs.output)["mAP"] == outputs.result["mAP"]
    assert outputs.files and all(f.startswith(root) and files.isfile(f) for f in outputs.files)

    # === Label cleaning heads on the run's frozen backbone, through a feature cache nlr-train builds ===
    heads = f"{root}/runs/label_cleaning"
    train(
        _config(
            root,
            heads,
            4,
            method="label_cleaning",
            init_checkpoint=run,
            train_backbone=False,
            feature_cache=f"{root}/cache",
        )
    )
    assert load_dataset_info(f"{root}/cache").feature_dim == 64  # the small CNN's features

    # === Export with thresholds chosen on val ===
    model, run_config = run_files.load_trained_model(heads)
    chosen = run_thresholds(model, run_config, heads, f"{root}/data", "val")
    export_dir = f"{root}/export"
    names = run_config["class_names"]
    write_export(
        model,
        export_dir,
        image_size=IMAGE_SIZE,
        class_names=names,
        thresholds=chosen.values,
        thresholds_json=chosen.as_dict(names, "val"),
    )
    assert files.isfile(f"{export_dir}/saved_model.pb") and files.isfile(f"{export_dir}/{THRESHOLDS_FILE}")
    served = tf.saved_model.load(export_dir).signatures["serve_images"](
        images=tf.zeros([2, IMAGE_SIZE, IMAGE_SIZE, 3])
    )
    assert served["scores"].shape == (2, len(CLASSES)) and served["labels"].shape == (2, len(CLASSES))

    # === Clean the noisy labels into a new dataset ===
    report = clean_labels(heads, f"{root}/cache", f"{root}/cleaned", max_suspects=20)
    cleaned = load_dataset_info(f"{root}/cleaned")
    assert cleaned.splits["noisy"].num_records == 30 and report["cleaned_labels"]["dataset"] == f"{root}/cleaned"
    for name in (REPORT_JSON, SUSPECTS_CSV, CLEANED_LABELS_CSV):
        assert files.isfile(f"{root}/cleaned/{name}")

    # === Nothing reached the local disk ===
    assert not os.path.exists(tmp_path / "ram:") and not os.path.exists("ram:")
    assert _local_files(tmp_path) == []


def test_a_failed_commit_off_the_local_disk_leaves_no_dataset(monkeypatch):
    """Where folders are committed file by file, a folder whose last file (dataset.json) is missing is not a
    dataset, and a failure inside the writer leaves nothing."""
    root = f"ram://nlr-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_output_dir(f"{root}/out") as tmp:
            files.write_text(f"{tmp}/part-0", "x")
            raise RuntimeError("interrupted")
    assert files.listdir(root) == []
    moved = []
    real_rename = tf.io.gfile.rename

    def rename_then_fail(source, target, overwrite=False):
        if target.startswith(f"{root}/out/"):  # the commit, not a whole-file write inside the temporary folder
            if target.endswith("dataset.json"):
                raise tf.errors.UnavailableError(None, None, "connection lost")
            moved.append(target)
        return real_rename(source, target, overwrite)

    monkeypatch.setattr(tf.io.gfile, "rename", rename_then_fail)
    with pytest.raises(tf.errors.UnavailableError):
        with atomic_output_dir(f"{root}/out") as tmp:
            files.write_text(f"{tmp}/shard", "x")
            files.write_text(f"{tmp}/dataset.json", "{}")
    assert moved == [f"{root}/out/shard"]  # dataset.json, moved last, never arrived
    with pytest.raises(ValueError, match="not a complete dataset"):
        load_dataset_info(f"{root}/out")
