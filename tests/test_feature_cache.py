"""The feature cache: exact features and labels, the same step as through the backbone."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_util import run_cli
from conftest import write_toy_dataset

from nlr_tf.backbones.networks import build_backbone
from nlr_tf.data import pipeline, schema
from nlr_tf.data.feature_cache import FeatureCacheError, extract_features, load_feature_cache, read_split
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.parsing import iterate_label_lists, make_example, parse_examples
from nlr_tf.models.methods import METHODS, build_model
from nlr_tf.training.checks import ConfigError
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.trainer import train

# Images at 16 pixels; a cache's records carry features, which need no image size.
SMALL16 = InputConfig(backbone="small_cnn", image_size=16)
CACHED = InputConfig(backbone="small_cnn")


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


@pytest.fixture(scope="module")
def toy16(toy):
    """The same features as `toy`'s cache, stored as float16."""
    root, info, _, backbone, _ = toy
    return extract_features(
        backbone,
        info,
        str(root / "cache16"),
        backbone_name="small_cnn",
        backbone_source="test",
        image_size=16,
        num_shards=2,
        progress=False,
        dtype="float16",
    )


def test_cache_holds_the_backbone_features_and_the_same_labels(toy):
    root, info, records, backbone, cache = toy
    assert cache.feature_dim == 64 and set(cache.splits) == {"noisy", "clean", "val"}
    assert cache.provenance["feature_cache"]["source_dataset"] == info.path
    images = pipeline.make_split_dataset(info, "val", 6, input_config=SMALL16, training=False, with_ids=True)
    batch = next(iter(images))
    want = dict(zip(batch["id"].numpy(), backbone(batch["image"], training=False).numpy()))
    cached = pipeline.make_split_dataset(cache, "val", 6, input_config=CACHED, training=False, with_ids=True)
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
                info, 10, "9:1", input_config=dataclasses.replace(SMALL16, deterministic=True), with_ids=True
            )
        )
    )
    cached_by_id = {}
    for split in ("noisy", "clean"):
        for b in pipeline.make_split_dataset(cache, split, 64, input_config=CACHED, training=False, with_ids=True):
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


@pytest.mark.slow
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
        "--cache_dtype=float16",
        "--quiet",
    )
    assert proc.returncode == 0 and "64-d features (float16)" in proc.stdout and "val=6" in proc.stdout
    bad = run_cli(
        "train",
        *args[:-1],
        "--train_steps=6",
        f"--model_dir={tmp_path / 'd'}",
        f"--feature_cache={tmp_path / 'c'}",
        "--cache_dtype=float16",
    )
    assert bad.returncode == 1 and "lacks the split(s) noisy, clean" in bad.stderr


# === float16 caches ===
def _shard_bytes(cache: schema.DatasetInfo) -> int:
    return sum(os.path.getsize(f) for split in cache.splits for f in cache.split_files(split))


def test_a_float16_cache_holds_the_float32_features_rounded_and_reads_as_float32(toy, toy16):
    root, info, _, _, cache = toy
    assert toy16.feature_dtype == "float16" and toy16.provenance["feature_cache"]["dtype"] == "float16"
    assert cache.feature_dtype == "float32" and toy16.feature_dim == cache.feature_dim == 64
    for split in ("noisy", "clean", "val"):
        want, got = read_split(cache, split), read_split(toy16, split)
        assert got["features"].dtype == np.float32 and got["features"].shape == want["features"].shape
        np.testing.assert_array_equal(got["id"], want["id"])
        np.testing.assert_allclose(got["features"], want["features"], rtol=1e-3, atol=1e-7)
        np.testing.assert_array_equal(got["features"], want["features"].astype(np.float16).astype(np.float32))
        for key in ("noisy_labels", "verified_labels", "verified_mask"):
            np.testing.assert_array_equal(got[key], want[key])
    # The training stream (exact mixing, shuffled): float32 features of the cache's records.
    batch = next(iter(pipeline.make_train_dataset(toy16, 10, "9:1", input_config=CACHED, with_ids=True)))
    assert batch["features"].dtype == tf.float32 and batch["features"].shape == (10, 64)
    by_id = {}
    for split in ("noisy", "clean"):
        by_id.update(zip(read_split(toy16, split)["id"], read_split(toy16, split)["features"]))
    for image_id, features in zip(batch["id"].numpy(), batch["features"].numpy()):
        np.testing.assert_array_equal(features, by_id[image_id])
    # The features dominate a record when they are wide (2048 for inception_v3 or resnet50): half the bytes.
    # (small_cnn's 64 are about 60 % of its records, whose ids and label lists do not shrink.)
    images = keras.Input((16, 16, 3))
    pixels = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(images))
    wide = keras.Model(images, keras.layers.Dense(1024)(pixels))
    sizes = {}
    for dtype in ("float32", "float16"):
        wide_cache = extract_features(
            wide,
            info,
            str(root / f"wide_{dtype}"),
            backbone_name="small_cnn",
            backbone_source="wide",
            image_size=16,
            splits=["val"],
            progress=False,
            dtype=dtype,
        )
        sizes[dtype] = _shard_bytes(wide_cache)
    assert 0.45 < sizes["float16"] / sizes["float32"] < 0.6, sizes
    assert _shard_bytes(toy16) < 0.8 * _shard_bytes(cache)


def test_a_feature_beyond_float16s_range_is_refused(toy, tmp_path):
    _, info, _, _, _ = toy
    images = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(images)
    bias = keras.initializers.Constant([1.0, 1e6, 1.0, 1.0])
    huge = keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer=bias)
    backbone = keras.Model(images, huge(pooled))
    common = dict(backbone_name="small_cnn", backbone_source="huge", image_size=16, splits=["val"], progress=False)
    overflow = r"split 'val', record 0 \(id '.+'\): feature 1 = 1e\+06 overflows float16"
    with pytest.raises(FeatureCacheError, match=overflow):
        extract_features(backbone, info, str(tmp_path / "c16"), dtype="float16", **common)
    assert not os.path.exists(tmp_path / "c16") and os.listdir(tmp_path) == []
    cache = extract_features(backbone, info, str(tmp_path / "c32"), **common)
    assert read_split(cache, "val")["features"][:, 1].tolist() == [1e6] * 6
    with pytest.raises(ValueError, match="dtype='bfloat16': expected one of float32, float16"):
        extract_features(backbone, info, str(tmp_path / "cb"), dtype="bfloat16", **common)


def test_a_float16_record_of_another_length_is_a_clear_error():
    record = make_example("a", None, [0], features=np.ones(3, np.float32), feature_dtype="float16")
    good = parse_examples(tf.constant([record]), 2, feature_dim=3, feature_dtype="float16")
    assert good["features"].dtype == tf.float32 and good["features"].numpy().tolist() == [[1.0, 1.0, 1.0]]
    with pytest.raises(tf.errors.InvalidArgumentError, match="features/float16 does not hold 8 bytes"):
        parse_examples(tf.constant([record]), 2, feature_dim=4, feature_dtype="float16")
    # The keys differ: a float32 cache's record does not parse as float16, nor the reverse.
    with pytest.raises(tf.errors.InvalidArgumentError, match="features"):
        parse_examples(tf.constant([record]), 2, feature_dim=3)


def test_a_cache_of_another_dtype_is_refused(toy, toy16):
    _, info, _, _, cache = toy
    same = dict(source_dataset=info.path, backbone_source="test", image_size=16)
    with pytest.raises(FeatureCacheError, match="stores its features as float16, not float32"):
        load_feature_cache(toy16.path, dtype="float32", **same)
    with pytest.raises(FeatureCacheError, match="stores its features as float32, not float16"):
        load_feature_cache(cache.path, dtype="float16", **same)
    assert load_feature_cache(toy16.path, dtype="float16", **same).feature_dtype == "float16"
    assert load_feature_cache(toy16.path, **same).feature_dtype == "float16"  # dtype None: any
    # A cache written before caches had a dtype holds float32 features.
    old = schema.DatasetInfo(**{**vars(cache), "provenance": {"feature_cache": {"feature_dim": 64}}})
    assert old.feature_dtype == "float32"


def test_heads_train_on_a_float16_cache_nlr_train_builds(toy, tmp_path):
    root, info, _, backbone, _ = toy
    weights = str(tmp_path / "backbone.weights.h5")
    backbone.get_layer("small_cnn").save_weights(weights)  # as nlr-pretext writes them
    cache = tmp_path / "cache16"
    config = dict(
        method="noise_regularization",
        dataset=info.path,
        backbone="small_cnn",
        backbone_weights=weights,
        image_size=16,
        train_backbone=False,
        feature_cache=str(cache),
        batch_size=10,
        train_steps=4,
        log_steps=2,
    )
    result = train(TrainConfig(model_dir=str(tmp_path / "a"), cache_dtype="float16", **config))
    assert result["step"] == 4 and np.isfinite(result["loss"])
    built = schema.load_dataset_info(str(cache))
    assert built.feature_dtype == "float16" and set(built.splits) == {"noisy", "clean", "val"}
    with pytest.raises(ConfigError, match="stores its features as float16, not float32"):
        train(TrainConfig(model_dir=str(tmp_path / "b"), cache_dtype="float32", **config))
    # Without --cache_dtype, an existing cache is read in whatever dtype it stores.
    assert train(TrainConfig(model_dir=str(tmp_path / "c"), **config))["step"] == 4
