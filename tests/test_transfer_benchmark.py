"""The transfer benchmark's pieces: a source run's backbone file, and noise compiled by its classifier."""

import json

import numpy as np
import pytest
from cli_util import run_cli
from conftest import write_toy_dataset

from nlr_tf.data.schema import load_dataset_info
from nlr_tf.reproduce import budgets
from tfrecords_tools import digits_mosaic, glyphs
from tfrecords_tools.records import ConversionError
from tfrecords_tools.writer import write_dataset

SOURCE_TRAIN = ("--backbone=small_cnn", "--image_size=16", "--batch_size=32", "--train_steps=30", "--seed=0")


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A tiny glyphs dataset and a source classifier trained on it for a few steps."""
    root = tmp_path_factory.mktemp("source")
    write_dataset(glyphs.convert(seed=0, num_train=400, num_val=76, num_test=76), str(root / "glyphs"), progress=False)
    proc = run_cli(
        "train", "--method=noisy", f"--dataset={root / 'glyphs'}", f"--model_dir={root / 'run'}", *SOURCE_TRAIN
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


def test_a_run_writes_its_backbone_weights_for_another_runs_backbone_weights(source_run):
    import keras

    from nlr_tf.backbones.networks import build_backbone
    from nlr_tf.training.model_dir import BACKBONE_WEIGHTS_FILE, load_trained_model

    model, _ = load_trained_model(str(source_run / "run"))
    backbone = build_backbone("small_cnn", str(source_run / "run" / BACKBONE_WEIGHTS_FILE), image_size=16)
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(backbone(images, training=False)),
        keras.ops.convert_to_numpy(model.backbone(images, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_transfer_noise_is_the_source_classifiers_top_k_digits_on_each_whole_mosaic(source_run, tmp_path):
    from nlr_tf.evaluation.annotator import RunAnnotator

    annotator = RunAnnotator(str(source_run / "run"))
    assert annotator.class_names[:10] == list(digits_mosaic.CLASS_NAMES) and len(annotator.class_names) > 10
    built, _, details = digits_mosaic.build(
        "multi_label", 0.1, 0, num_train=60, num_val=20, num_test=20, annotator=annotator, annotator_top_k=3
    )
    assert details["annotator"]["top_k"] == 3 and details["annotator"]["source_classes"] == len(glyphs.CLASSES)
    images, true, noisy, picks = built["train"]
    scores = annotator.scores(np.stack(images))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    expected = [sorted(int(c) for c in row if c < 10) for row in top]  # glyphs' classes 0-9 are the digits
    assert noisy == expected
    assert all(len(n) <= 3 for n in noisy) and any(n != t for n, t in zip(noisy, true))
    # The mosaics themselves are drawn as without an annotator (same counts and scans per image).
    plain, _, _ = digits_mosaic.build("multi_label", 0.1, 0, num_train=60, num_val=20, num_test=20)
    assert [len(p) for p in plain["val"][3]] == [len(p) for p in built["val"][3]]
    assert plain["val"][1] == built["val"][1]


def test_the_cli_compiles_the_transfer_noise_and_records_the_annotator(source_run, tmp_path):
    out = tmp_path / "ml_transfer"
    proc = run_cli(
        "make_tfrecords",
        "--source=digits_mosaic",
        "--variant=multi_label",
        "--num_train=50",
        "--num_val=20",
        "--num_test=20",
        f"--annotator={source_run / 'run'}",
        "--annotator_top_k=2",
        f"--output_dir={out}",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = load_dataset_info(str(out))
    annotator = info.provenance["details"]["annotator"]
    assert annotator["top_k"] == 2 and annotator["model_dir"] == str(source_run / "run")
    assert json.loads((out / "dataset.json").read_text())["provenance"]["arguments"]["annotator_top_k"] == 2


def test_an_annotator_needs_the_digits_by_name_and_multi_label_data(tmp_path):
    toy = tmp_path / "toy"
    write_toy_dataset(toy, {"noisy": 40, "val": 10})
    proc = run_cli(
        "train", "--method=noisy", f"--dataset={toy}", f"--model_dir={tmp_path / 'toy_run'}", *SOURCE_TRAIN[:-2]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    args = ("--source=digits_mosaic", "--num_train=20", "--num_val=10", "--num_test=10", "--quiet")
    proc = run_cli("make_tfrecords", *args, f"--annotator={tmp_path / 'toy_run'}", f"--output_dir={tmp_path / 'a'}")
    assert proc.returncode == 1 and "must include the ten digits by name" in proc.stderr
    assert not (tmp_path / "a").exists()
    proc = run_cli("make_tfrecords", *args, f"--annotator={tmp_path / 'nowhere'}", f"--output_dir={tmp_path / 'b'}")
    assert proc.returncode == 1 and "--annotator:" in proc.stderr
    with pytest.raises(ConversionError, match="single_label keeps its class noise"):
        digits_mosaic.build("single_label", 0.1, 0, num_train=20, num_val=10, num_test=10, annotator=object())


def test_the_wide_small_cnn_has_twice_the_filters_and_four_times_the_features_of_the_small_one(tmp_path):
    from nlr_tf.backbones.networks import build_backbone

    small, wide = (build_backbone(name, image_size=16) for name in ("small_cnn", "small_cnn_wide"))
    assert small.output_shape == (None, 64) and wide.output_shape == (None, 128)
    weights = str(tmp_path / "wide.weights.h5")
    wide.get_layer("small_cnn_wide").save_weights(weights)
    again = build_backbone("small_cnn_wide", weights, image_size=16)
    assert all((a == b).all() for a, b in zip(wide.get_weights(), again.get_weights()))


def test_the_knob_table_shows_the_setting_the_plan_uses():
    from nlr_tf.reproduce import premise

    knobs = premise.load_knobs()
    chosen = [k for k in knobs["knobs"] if k.get("chosen")]
    assert len(chosen) == 1
    # The plan's transfer network and annotator are the knob table's choice, which is the best on val.
    assert (chosen[0]["backbone"], chosen[0]["image_size"]) == budgets.FULL.network("transfer")
    assert chosen[0]["top_k"] == budgets.FULL.annotator_top_k
    assert chosen[0]["gap_closed"][0] == max(k["gap_closed"][0] for k in knobs["knobs"])
    md = premise.premise_markdown({"knobs": knobs})
    assert "(used)" in md and md.count("\n| ") == len(knobs["knobs"]) + 1
