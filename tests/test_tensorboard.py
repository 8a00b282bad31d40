"""What nlr-train and nlr-eval write for TensorBoard, read back as TensorBoard reads it, and nlr-eval's reports."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from cli_util import run_cli, train_noisy_then_heads
from conftest import write_toy_dataset
from PIL import Image
from tensorboard import context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins import base_plugin
from tensorboard.plugins.pr_curve import pr_curves_plugin

from nlr_tf.evaluation import evaluator, pr_curves
from nlr_tf.models.noise_regularization import NoiseRegularizationModel

NUM_CLASSES = 5
PNGS = ("gain_by_frequency.png", "gain_by_quality.png", "pr_curves.png", "examples.png")
# Keep every event: the defaults sample some kinds down.
EVERYTHING = {kind: 0 for kind in (ea.TENSORS, ea.SCALARS, ea.IMAGES, ea.HISTOGRAMS, ea.COMPRESSED_HISTOGRAMS)}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A noisy baseline and noise-regularization heads on its features, then nlr-eval with the baseline."""
    root = tmp_path_factory.mktemp("tb")
    # Test labels verified on ~70 % of the classes: unverified entries must stay out of the PR curves.
    info, records = write_toy_dataset(
        root / "toy", {"noisy": 60, "clean": 20, "test": 15}, num_shards=2, with_true=True, verify_share=0.7
    )
    common = [f"--dataset={info.path}", "--image_size=16", "--batch_size=20", "--log_steps=5", "--train_steps=5"]
    train_noisy_then_heads(root, common, f"--feature_cache={root / 'fc'}")
    proc = run_cli(
        "evaluate",
        f"--model_dir={root / 'nr'}",
        f"--dataset={info.path}",
        "--split=test",
        f"--baseline_model_dir={root / 'noisy'}",
        "--num_examples=6",
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((root / "nr" / "eval_test" / "metrics.json").read_text())
    return root, info, records, proc, metrics


def _events(folder):
    return ea.EventAccumulator(str(folder), size_guidance=EVERYTHING).Reload()


def test_training_and_eval_events_hold_every_tag(evaluated):
    root, _, records, _, metrics = evaluated
    train = _events(root / "nr" / "train")
    expected = {f"losses/{n}" for n in NoiseRegularizationModel.loss_names} | {"learning_rate/heads"}
    assert expected | {"examples_per_second"} <= set(train.PluginTagToContent("scalars"))
    assert [e.step for e in train.Tensors("losses/loss")] == [5]

    evals = _events(root / "nr" / "eval_test")
    scalars = evals.PluginTagToContent("scalars")
    assert {"mAP", "APall", "top1", "per_category_mAP/even", "per_category_mAP/odd"} <= set(scalars)
    for tag, value in (("mAP", metrics["mAP"]), ("APall", metrics["APall"]), ("per_category_mAP/odd", None)):
        (event,) = evals.Tensors(tag)
        assert event.step == json.loads((root / "nr" / "train_result.json").read_text())["step"] == 5
        expected_value = metrics["per_category_mAP"]["odd"] if value is None else value
        assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(expected_value, rel=1e-6)

    # PR curves: the plugin's tensors [6, thresholds], over the verified entries only.
    assert set(evals.PluginTagToContent("pr_curves")) == {"pr_curves/all", "pr_curves/even", "pr_curves/odd"}
    test = [r for r in records if r.split == "test"]
    positives = {c: sum(c in r.verified_pos for r in test) for c in range(NUM_CLASSES)}
    negatives = {c: sum(c in r.verified_neg for r in test) for c in range(NUM_CLASSES)}
    assert sum(positives.values()) + sum(negatives.values()) < len(test) * NUM_CLASSES  # some are unverified
    for tag, classes in (("pr_curves/all", range(5)), ("pr_curves/even", (0, 2, 4)), ("pr_curves/odd", (1, 3))):
        (event,) = evals.Tensors(tag)
        data = tf.make_ndarray(event.tensor_proto)
        assert data.shape == (6, pr_curves.PR_THRESHOLDS) and event.step == 5
        tp, fp, tn, fn, precision, recall = data[:, 0]  # threshold 0: every counted entry predicted present
        assert (tp, fp, tn, fn) == (sum(positives[c] for c in classes), sum(negatives[c] for c in classes), 0, 0)
        assert recall == 1.0 and precision == pytest.approx(tp / (tp + fp))
        assert np.all(np.diff(data[0]) <= 0) and np.all(data[0] + data[3] == tp)

    # TensorBoard's own PR-curve plugin serves them.
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(root / "nr"))
    mux.Reload()
    plugin = pr_curves_plugin.PrCurvesPlugin(
        base_plugin.TBContext(data_provider=data_provider.MultiplexerDataProvider(mux, str(root / "nr")))
    )
    served = plugin.pr_curves_impl(context.RequestContext(), "", ["eval_test"], "pr_curves/all")["eval_test"]
    assert len(served) == 1 and served[0]["step"] == 5 and served[0]["recall"][0] == 1.0

    # The examples image: the same pixels as examples.png.
    assert set(evals.PluginTagToContent("images")) == {"examples"}
    (event,) = evals.Tensors("examples")
    width, height, png = tf.make_ndarray(event.tensor_proto)
    pixels = tf.io.decode_png(png).numpy()
    assert pixels.shape[:2] == (int(height), int(width))
    on_disk = np.asarray(Image.open(root / "nr" / "eval_test" / "examples.png").convert("RGB"))
    np.testing.assert_array_equal(pixels[..., :3], on_disk)


def test_eval_reports_gain_by_frequency_and_quality_and_writes_pngs(evaluated):
    root, _, records, proc, metrics = evaluated
    assert "AP gain by class frequency" in proc.stdout and "AP gain by annotation quality" in proc.stdout
    assert "fewer than 10 classes to group: 5 groups of one class" in proc.stdout
    assert metrics["baseline"]["model_dir"] == str(root / "noisy") and np.isfinite(metrics["baseline"]["mAP"])
    names = [f"class_{c}" for c in range(NUM_CLASSES)]
    noisy = [r for r in records if r.split == "noisy"]
    count = np.array([sum(c in r.noisy for r in noisy) for c in range(NUM_CLASSES)])
    quality = np.array([sum(c in r.noisy and c in r.true for r in noisy) for c in range(NUM_CLASSES)]) / count
    for key, statistic in (("gain_by_frequency", count), ("gain_by_quality", quality)):
        table = metrics[key]
        assert table["split"] == "noisy" and table["num_groups"] == 5
        order = np.argsort(statistic, kind="stable")
        assert [g["classes"] for g in table["groups"]] == [[names[c]] for c in order]
        for g, c in zip(table["groups"], order):
            model_ap, base_ap = metrics["per_class_AP"][names[c]], metrics["baseline"]["per_class_AP"][names[c]]
            assert g["min"] == g["max"] == pytest.approx(statistic[c])
            assert g["gain"] == pytest.approx(model_ap - base_ap) and g["model_mAP"] == pytest.approx(model_ap)
    for name in PNGS:
        path = root / "nr" / "eval_test" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_eval_on_a_feature_cache_reads_its_source_for_images(evaluated, tmp_path):
    root, info, _, _, metrics = evaluated
    config = evaluator.EvalConfig(
        model_dir=str(root / "nr"),
        dataset=str(root / "fc"),
        baseline_model_dir=str(root / "noisy"),
        num_examples=3,
        output=str(tmp_path / "cache" / "metrics.json"),
    )
    out = evaluator.run_evaluation(config)
    # Both runs' backbone made the cache: scores from its features, images from its source dataset.
    assert out.notes == [] and (tmp_path / "cache" / "examples.png").is_file()
    assert out.result["mAP"] == pytest.approx(metrics["mAP"], abs=1e-5)
    assert out.result["gain_by_frequency"]["groups"] == metrics["gain_by_frequency"]["groups"]

    # A cache whose features came from another backbone: the runs are evaluated on its source's images.
    # A cache whose source dataset is gone: scores from the cache, the examples grid is skipped.
    for change, folder in (("backbone_source", "other_backbone"), ("source_dataset", "no_source")):
        cache = tmp_path / folder
        shutil.copytree(root / "fc", cache)
        meta = json.loads((cache / "dataset.json").read_text())
        meta["provenance"]["feature_cache"][change] = str(tmp_path / "elsewhere")
        (cache / "dataset.json").write_text(json.dumps(meta))
        out = evaluator.run_evaluation(
            evaluator.EvalConfig(**{**vars(config), "dataset": str(cache), "output": str(cache / "m.json")})
        )
        assert out.result["mAP"] == pytest.approx(metrics["mAP"], abs=1e-5)
        if change == "backbone_source":
            assert len(out.notes) == 2 and all(f"evaluated on the images of {info.path}" in n for n in out.notes)
            assert (cache / "examples.png").is_file()
        else:
            assert len(out.notes) == 1 and out.notes[0].startswith("examples.png skipped: the feature cache's images")
            assert not (cache / "examples.png").exists() and (cache / "pr_curves.png").is_file()


def test_a_baseline_with_another_class_count_is_a_one_line_error(evaluated, tmp_path):
    root, info, _, _, _ = evaluated
    from nlr_tf.models.methods import build_model, get_method

    build_model(get_method("noisy"), 7, "small_cnn", image_size=16).save(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps({"backbone": "small_cnn", "image_size": 16, "model_format": 2}))
    proc = run_cli(
        "evaluate", f"--model_dir={root / 'nr'}", f"--dataset={info.path}", f"--baseline_model_dir={tmp_path}"
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"nlr-eval: error: baseline {str(tmp_path)!r} has 7 classes but the model {str(root / 'nr')!r} has 5"
    )
