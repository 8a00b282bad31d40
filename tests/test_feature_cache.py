"""The feature cache: exact features and labels, the same step as through the backbone."""

import os

import numpy as np
import pytest
import tensorflow as tf
from cli_util import run_cli
from conftest import write_toy_dataset

from nlr_tf.data import pipeline
from nlr_tf.data.feature_cache import FeatureCacheError, extract_features, load_feature_cache
from nlr_tf.data.parsing import iterate_label_lists
from nlr_tf.models.backbones import build_backbone
from nlr_tf.models.methods import METHODS, build_model


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc")
    info, records = write_toy_dataset(root / "toy", {"noisy": 40, "clean": 10, "val": 6}, num_shards=3, with_true=True)
    backbone = build_backbone("small_cnn", image_size=16, trainable=False)
    cache = extract_features(
        backbone,
        info,
        str(root / "cache"),
        backbone_name="small_cnn",
        backbone_source="test",
        image_size=16,
        num_shards=2,
        progress=False,
    )
    return root, info, records, backbone, cache


def test_cache_holds_the_backbone_features_and_the_same_labels(toy):
    root, info, records, backbone, cache = toy
    assert cache.feature_dim == 64 and set(cache.splits) == {"noisy", "clean", "val"}
    assert cache.provenance["feature_cache"]["source_dataset"] == info.path
    images = pipeline.make_split_dataset(
        info, "val", 6, backbone="small_cnn", image_size=16, training=False, with_ids=True
    )
    batch = next(iter(images))
    want = dict(zip(batch["id"].numpy(), backbone(batch["image"], training=False).numpy()))
    cached = pipeline.make_split_dataset(cache, "val", 6, backbone="small_cnn", training=False, with_ids=True)
    got = next(iter(cached))
    assert "image" not in got
    for image_id, features in zip(got["id"].numpy(), got["features"].numpy()):
        np.testing.assert_allclose(features, want[image_id], atol=1e-5)
    for split in ("noisy", "clean", "val"):
        by_id = {r.id: r for r in records if r.split == split}
        rows = list(iterate_label_lists(cache.split_files(split)))
        assert sorted(r["id"] for r in rows) == sorted(by_id)
        for r in rows:
            src = by_id[r["id"]]
            assert (r["noisy"], r["verified_pos"], r["verified_neg"], r["true"]) == (
                sorted(src.noisy),
                sorted(src.verified_pos),
                sorted(src.verified_neg),
                sorted(src.true),
            )


@pytest.mark.parametrize("method", ["noise_regularization", "label_cleaning", "ft_mixed"])
def test_a_step_on_cached_features_equals_a_step_through_the_frozen_backbone(toy, method):
    root, info, _, backbone, cache = toy
    images = next(
        iter(
            pipeline.make_train_dataset(
                info, 10, "9:1", backbone="small_cnn", image_size=16, deterministic=True, with_ids=True
            )
        )
    )
    cached_by_id = {}
    for split in ("noisy", "clean"):
        for b in pipeline.make_split_dataset(cache, split, 64, backbone="small_cnn", training=False, with_ids=True):
            cached_by_id.update(zip(b["id"].numpy(), b["features"].numpy()))
    features = dict(images)
    del features["image"]
    features["features"] = tf.constant(np.stack([cached_by_id[i] for i in images["id"].numpy()]))
    weights = []
    for batch in (images, features):
        tf.keras.utils.set_random_seed(1)
        model = build_model(METHODS[method], info.num_classes, "small_cnn", image_size=16, train_backbone=False)
        model.backbone.set_weights(backbone.get_weights())
        import keras

        model.set_part_optimizers({p: keras.optimizers.SGD(0.5) for p in model.part_layers() if p != "backbone"})
        batch = {k: v for k, v in batch.items() if k != "id"}
        model.train_step(batch)
        model.train_step(batch)
        weights.append([w.numpy() for w in model.trainable_weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_cache_of_another_dataset_or_backbone_is_refused(toy, tmp_path):
    root, info, _, _, cache = toy
    with pytest.raises(FeatureCacheError, match="made from dataset"):
        load_feature_cache(cache.path, source_dataset=str(tmp_path), backbone_source="test")
    with pytest.raises(FeatureCacheError, match="holds features of '.*test', not of 'other'"):
        load_feature_cache(cache.path, source_dataset=info.path, backbone_source="other")
    with pytest.raises(FeatureCacheError, match="not a feature cache"):
        load_feature_cache(info.path, source_dataset=info.path, backbone_source="test")
    with pytest.raises(FeatureCacheError, match="16-pixel images, not 32"):
        load_feature_cache(cache.path, source_dataset=info.path, backbone_source="test", image_size=32)


def test_cache_identity_is_one_rule_for_relative_and_absolute_paths(toy, monkeypatch):
    root, info, _, _, cache = toy
    # The cache was made with the relative source "test" from the current folder: the same weights whether a
    # later run names them relatively, absolutely or through a symbolic link.
    source = os.path.abspath("test")
    load_feature_cache(cache.path, source_dataset=info.path, backbone_source=source, image_size=16)
    os.symlink(os.getcwd(), root / "here")
    load_feature_cache(cache.path, source_dataset=info.path, backbone_source=str(root / "here" / "test"))
    monkeypatch.chdir(os.path.dirname(info.path))
    load_feature_cache(cache.path, source_dataset=os.path.basename(info.path), backbone_source=source)


def test_train_builds_the_cache_once_and_reuses_it(toy, tmp_path):
    root, info, *_ = toy
    noisy = tmp_path / "noisy"
    common = [f"--dataset={info.path}", "--backbone=small_cnn", "--image_size=16", "--batch_size=10", "--log_steps=5"]
    assert run_cli("train", "--method=noisy", f"--model_dir={noisy}", "--train_steps=5", *common).returncode == 0
    cache = tmp_path / "cache"
    args = [
        "--method=noise_regularization",
        f"--init_checkpoint={noisy}",
        "--train_backbone=false",
        f"--feature_cache={cache}",
        "--train_steps=5",
        *common,
    ]
    first = run_cli("train", *args, f"--model_dir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr
    assert "building the feature cache" in first.stderr
    stamp = os.path.getmtime(cache / "dataset.json")
    second = run_cli("train", *args, f"--model_dir={tmp_path / 'b'}")
    assert second.returncode == 0 and "building the feature cache" not in second.stderr
    assert os.path.getmtime(cache / "dataset.json") == stamp
    proc = run_cli(
        "extract_features",
        f"--model_dir={noisy}",
        f"--dataset={info.path}",
        f"--output_dir={tmp_path / 'c'}",
        "--splits=val",
        "--quiet",
    )
    assert proc.returncode == 0 and "64-d features" in proc.stdout and "val=6" in proc.stdout
    bad = run_cli(
        "train", *args[:-1], "--train_steps=6", f"--model_dir={tmp_path / 'd'}", f"--feature_cache={tmp_path / 'c'}"
    )
    assert bad.returncode == 1 and "lacks the split(s) noisy, clean" in bad.stderr
