"""nlr-eval: metrics of a trained model, from images or from its feature cache."""

import json

import numpy as np
import pytest
from cli_util import run_cli, train_noisy_then_heads
from conftest import write_toy_dataset

from nlr_tf import metrics
from nlr_tf.data.schema import load_dataset_info
from nlr_tf.models.prediction import predict
from nlr_tf.training.model_dir import load_trained_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    info, _ = write_toy_dataset(root / "toy", {"noisy": 60, "clean": 20, "test": 15}, num_shards=2, with_true=True)
    common = [f"--dataset={info.path}", "--image_size=16", "--batch_size=20", "--log_steps=5", "--train_steps=5"]
    train_noisy_then_heads(root, common, f"--feature_cache={root / 'fc'}")
    return root, info


@pytest.mark.slow
def test_eval_from_images_and_from_the_feature_cache_agree(trained):
    root, info = trained
    outputs = []
    for dataset, out in ((info.path, root / "a.json"), (root / "fc", root / "b.json")):
        proc = run_cli(
            "evaluate", f"--model_dir={root / 'nr'}", f"--dataset={dataset}", "--split=test", f"--output={out}"
        )
        assert proc.returncode == 0, proc.stderr
        assert "test: mAP=" in proc.stdout and "mAP even" in proc.stdout
        outputs.append(json.loads(out.read_text()))
    a, b = outputs
    assert a["num_images"] == 15 and set(a["per_category_mAP"]) == {"even", "odd"}
    for key in ("mAP", "APall", "top1"):
        assert a[key] == pytest.approx(b[key], abs=1e-5)
    # The same numbers as the metrics module on the model's own predictions.
    model, run_config = load_trained_model(str(root / "nr"))
    p = predict(model, info, "test", backbone="small_cnn", image_size=16)
    report = metrics.evaluate(p["scores"], p["verified_labels"], p["verified_mask"])
    assert a["mAP"] == pytest.approx(report.map) and a["APall"] == pytest.approx(report.ap_all)
    assert np.isfinite(a["against_truth"]["mAP"])


def test_eval_errors_are_one_line(trained, tmp_path):
    root, info = trained
    proc = run_cli("evaluate", f"--model_dir={tmp_path}", f"--dataset={info.path}")
    assert proc.returncode == 1 and "holds no finished run" in proc.stderr
    proc = run_cli("evaluate", f"--model_dir={root / 'nr'}", f"--dataset={info.path}", "--split=nope")
    assert proc.returncode == 1 and "has no split 'nope'" in proc.stderr
    other, _ = write_toy_dataset(tmp_path / "other", {"test": 5}, num_classes=7)
    proc = run_cli("evaluate", f"--model_dir={root / 'nr'}", f"--dataset={other.path}")
    assert proc.returncode == 1 and "has 5 classes but dataset" in proc.stderr
    assert load_dataset_info(info.path).num_classes == 5
