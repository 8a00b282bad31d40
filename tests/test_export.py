"""nlr-export: a SavedModel with two signatures, loaded in a fresh process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sklearn.datasets
from cli_util import ROOT, run_cli, train_noisy_then_heads
from conftest import toy_records, write_toy_dataset

SAMPLE_JPEG = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", "china.jpg")

_FRESH_PROCESS = r"""
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
data = open(sys.argv[2], "rb").read()
out = loaded.signatures["serving_default"](image_bytes=tf.constant([data, data]))
images = tf.image.resize(tf.io.decode_jpeg(data, channels=3), (int(sys.argv[3]), int(sys.argv[3])))[None]
same = loaded.signatures["serve_images"](images=images)
result = {k: v.numpy().tolist() if v.dtype != tf.string else [[s.decode() for s in r] for r in v.numpy()]
          for k, v in out.items()}
result["serve_images_scores"] = same["scores"].numpy().tolist()
try:
    loaded.signatures["serving_default"](image_bytes=tf.constant([b"not an image at all"]))
    result["bad_bytes"] = "scores"
except tf.errors.InvalidArgumentError as e:
    result["bad_bytes"] = str(e)
print(json.dumps(result))
"""


SPLITS = {"noisy": 40, "clean": 10, "val": 40}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    info, _ = write_toy_dataset(root / "toy", SPLITS)
    args = [f"--dataset={info.path}", "--image_size=24", "--batch_size=20", "--train_steps=3", "--log_steps=3"]
    train_noisy_then_heads(root, args)
    proc = run_cli("export", f"--model_dir={root / 'nr'}", f"--export_dir={root / 'saved' / '1'}", "--top_k=3")
    assert proc.returncode == 0, proc.stderr
    return root


def test_saved_model_cli_lists_both_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", str(exported / "saved" / "1"), "--all"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in (
        "signature_def['serving_default']",
        "signature_def['serve_images']",
        "inputs['image_bytes']",
        "inputs['images']",
        "outputs['scores']",
        "outputs['top_k_indices']",
        "outputs['top_k_names']",
    ):
        assert name in out.stdout


def test_fresh_process_gets_the_keras_scores_on_a_real_jpeg(exported):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(exported / "saved" / "1"), SAMPLE_JPEG, "24"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    import keras
    import tensorflow as tf

    from nlr_tf.training.model_dir import load_trained_model

    model, config = load_trained_model(str(exported / "nr"))
    data = open(SAMPLE_JPEG, "rb").read()
    images = tf.image.resize(tf.io.decode_jpeg(data, channels=3), (24, 24))[None]
    want = keras.ops.convert_to_numpy(model(images)["scores"])[0]
    np.testing.assert_allclose(served["scores"][0], want, atol=1e-5)
    np.testing.assert_allclose(served["serve_images_scores"][0], want, atol=1e-5)
    top = np.argsort(-want)[:3]
    assert served["top_k_indices"][0] == top.tolist()
    assert served["top_k_names"][0] == [config["class_names"][i] for i in top]
    assert "neither JPEG nor PNG" in served["bad_bytes"]


def test_export_refuses_to_overwrite_and_needs_a_finished_run(exported, tmp_path):
    proc = run_cli("export", f"--model_dir={exported / 'nr'}", f"--export_dir={exported / 'saved' / '1'}")
    assert proc.returncode == 1 and "exists" in proc.stderr
    proc = run_cli("export", f"--model_dir={tmp_path}", f"--export_dir={tmp_path / 'x'}")
    assert proc.returncode == 1 and "holds no finished run" in proc.stderr


def _served(export_dir, split):
    """Per-record outputs of the export's serving_default on the PNG bytes of the toy dataset's `split`."""
    import tensorflow as tf

    records = [r for r in toy_records(SPLITS) if r.split == split]
    data = tf.constant([tf.io.encode_png(r.image_array).numpy() for r in records])
    out = tf.saved_model.load(str(export_dir)).signatures["serving_default"](image_bytes=data)
    labels = np.zeros((len(records), 5), np.int32)
    for i, r in enumerate(records):
        labels[i, r.verified_pos] = 1
    return {k: v.numpy() for k, v in out.items()}, labels


def test_thresholds_chosen_on_val_give_back_their_f1_in_the_served_model(exported):
    from nlr_tf.evaluation import thresholds

    out = exported / "saved" / "thresholds"
    proc = run_cli("export", f"--model_dir={exported / 'nr'}", f"--export_dir={out}", "--thresholds")
    assert proc.returncode == 0, proc.stderr
    assert "thresholds (best F1 on val)" in proc.stdout
    chosen = json.loads((out / "thresholds.json").read_text())
    assert chosen["rule"] == "best F1" and len(chosen["classes"]) == 5
    served, labels = _served(out, "val")  # every class of val is verified
    _, _, f1 = thresholds.precision_recall_f1(served["labels"], labels)
    want = [np.nan if c["f1"] is None else c["f1"] for c in chosen["classes"]]
    np.testing.assert_allclose(np.where(np.isnan(want), np.nan, f1), want, atol=1e-9)
    names = [c["name"] for c in chosen["classes"]]
    for row_labels, row_names in zip(served["labels"], served["label_names"]):
        assert [n.decode() for n in row_names] == [names[j] if on else "" for j, on in enumerate(row_labels)]

    # A target precision: every predicted class reaches it on val, in the served model too.
    proc = run_cli(
        "export",
        f"--model_dir={exported / 'nr'}",
        f"--export_dir={out}",
        "--overwrite",
        "--thresholds",
        "--target_precision=0.5",
    )
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads((out / "thresholds.json").read_text())
    assert chosen["rule"] == "precision >= 0.5"
    served, labels = _served(out, "val")
    precision, _, _ = thresholds.precision_recall_f1(served["labels"], labels)
    for j, c in enumerate(chosen["classes"]):
        if c["threshold"] is None:
            assert "never_predicted" in c and served["labels"][:, j].sum() == 0
        else:
            assert precision[j] >= 0.5 and precision[j] == pytest.approx(c["precision"])


def test_thresholds_are_refused_without_verified_labels_or_with_bad_flags(exported):
    proc = run_cli(
        "export", f"--model_dir={exported / 'nr'}", f"--export_dir={exported / 'no'}", "--target_precision=0.9"
    )
    assert proc.returncode == 1 and "pass --thresholds with it" in proc.stderr
    proc = run_cli(
        "export",
        f"--model_dir={exported / 'nr'}",
        f"--export_dir={exported / 'no'}",
        "--thresholds",
        "--thresholds_split=noisy",
    )
    assert proc.returncode == 1 and "has no verified labels to choose thresholds on" in proc.stderr
    assert not (exported / "no").exists()
