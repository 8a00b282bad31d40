"""Tests of the tf.data input pipeline: mixing, labels, sharding, order, preprocessing."""

import dataclasses
import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import write_toy_dataset
from PIL import Image

from nlr_tf.backbones import scaling, sizes
from nlr_tf.backbones.scaling import BackbonePreprocessing
from nlr_tf.data import pipeline, preprocessing, schema
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.mixing import mix_counts, parse_mix_ratio

SMALL = InputConfig(backbone="small_cnn", image_size=8)
SMALL_DETERMINISTIC = InputConfig(backbone="small_cnn", image_size=8, deterministic=True)


def _ids(batch):
    return [i.decode() for i in batch["id"].numpy()]


def _multi_hot(indices, num_classes):
    v = np.zeros(num_classes, np.float32)
    v[list(indices)] = 1.0
    return v


# === Exact mixing ===


def test_exact_ratio_in_every_batch(toy_dataset):
    info, _ = toy_dataset
    ds = pipeline.make_train_dataset(info, 20, "9:1", with_ids=True, input_config=SMALL)
    for batch in ds.take(12):
        is_clean = batch["is_clean"].numpy()
        assert batch["image"].shape == (20, 8, 8, 3)
        assert is_clean.tolist() == [0.0] * 18 + [1.0] * 2
        splits = [i.split("-")[0] for i in _ids(batch)]
        assert splits == ["noisy"] * 18 + ["clean"] * 2
    ds = pipeline.make_train_dataset(info, 10, (4, 1), input_config=SMALL)
    for batch in ds.take(5):
        assert batch["is_clean"].numpy().sum() == 2


def test_exact_ratio_on_every_replica_under_mirrored_strategy(toy_dataset):
    info, _ = toy_dataset
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    dist = pipeline.distribute_train_dataset(strategy, info, 20, "9:1", input_config=SMALL)
    iterator = iter(dist)
    for _ in range(4):
        batch = next(iterator)
        per_replica = strategy.experimental_local_results(batch["is_clean"])
        assert len(per_replica) == 2
        for is_clean in per_replica:
            assert is_clean.numpy().tolist() == [0.0] * 9 + [1.0]
        for image in strategy.experimental_local_results(batch["image"]):
            assert image.shape == (10, 8, 8, 3)


def test_zero_parts_read_one_split_only(tmp_path):
    info, _ = write_toy_dataset(tmp_path / "noisy_only", {"noisy": 30}, num_shards=2)
    batch = next(iter(pipeline.make_train_dataset(info, 6, "1:0", with_ids=True, input_config=SMALL)))
    assert batch["is_clean"].numpy().sum() == 0
    assert all(i.startswith("noisy-") for i in _ids(batch))
    info, _ = write_toy_dataset(tmp_path / "clean_only", {"clean_all": 12}, num_shards=2)
    ds = pipeline.make_train_dataset(info, 6, "0:1", clean_split="clean_all", with_ids=True, input_config=SMALL)
    batch = next(iter(ds))
    assert batch["is_clean"].numpy().tolist() == [1.0] * 6
    assert all(i.startswith("clean_all-") for i in _ids(batch))


def test_configurable_clean_split(tmp_path):
    info, _ = write_toy_dataset(tmp_path / "d", {"noisy": 20, "clean": 5, "clean_all": 8}, num_shards=2)
    ds = pipeline.make_train_dataset(info, 10, "4:1", clean_split="clean_all", with_ids=True, input_config=SMALL)
    batch = next(iter(ds))
    assert [i.split("-")[0] for i in _ids(batch)] == ["noisy"] * 8 + ["clean_all"] * 2


def test_bad_ratio_or_batch_size_is_a_clear_value_error(toy_dataset):
    info, _ = toy_dataset
    with pytest.raises(ValueError, match=r"batch_size=64.*9:1"):
        pipeline.make_train_dataset(info, 64, "9:1", input_config=SMALL)
    for bad in ("9:x", "0:0", "1:2:3", (-1, 2), (1.5, 1), ""):
        with pytest.raises(ValueError, match="Received: mix_ratio="):
            parse_mix_ratio(bad)
    assert parse_mix_ratio("18:2") == (9, 1)
    assert mix_counts(60, "9:1") == (54, 6)
    with pytest.raises(ValueError, match="global_batch_size"):
        pipeline.make_train_dataset(info, 0, "9:1", input_config=SMALL)
    with pytest.raises(ValueError, match="Received: backbone='vgg'"):
        InputConfig(backbone="vgg")
    with pytest.raises(ValueError, match=r"Received: image_size=\(0, 8\)"):
        InputConfig(backbone="small_cnn", image_size=(0, 8))
    with pytest.raises(ValueError, match="Received: shuffle_buffer=0"):
        InputConfig(backbone="small_cnn", shuffle_buffer=0)
    # 20 over 3 replicas does not divide.
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=3)
    with pytest.raises(ValueError, match="not divisible by"):
        pipeline.make_train_dataset(info, 20, "9:1", input_context=context, input_config=SMALL)


def test_missing_split_is_a_clear_error(tmp_path):
    info, _ = write_toy_dataset(tmp_path / "noisy_only", {"noisy": 10}, num_shards=1)
    with pytest.raises(schema.DatasetError, match=r"split 'clean'.*noisy_only"):
        pipeline.make_train_dataset(info, 10, "9:1", input_config=SMALL)
    with pytest.raises(schema.DatasetError, match=r"split 'val'"):
        pipeline.make_split_dataset(info, "val", 4, training=False, input_config=SMALL)


# === Labels ===


def test_labels_and_masks_match_the_records(tmp_path):
    info, records = write_toy_dataset(
        tmp_path / "d", {"noisy": 30, "clean": 25}, num_classes=6, with_true=True, verify_share=0.5
    )
    by_id = {r.id: r for r in records}
    seen = 0
    unverified = 0
    datasets = [
        pipeline.make_split_dataset(
            info, "noisy", 8, training=False, with_ids=True, with_true=True, input_config=SMALL
        ),
        pipeline.make_split_dataset(
            info, "clean", 8, training=False, with_ids=True, with_true=True, input_config=SMALL
        ),
        pipeline.make_train_dataset(info, 10, "4:1", with_ids=True, input_config=SMALL).take(6),
    ]
    for ds in datasets:
        for batch in ds:
            for k, image_id in enumerate(_ids(batch)):
                r = by_id[image_id]
                np.testing.assert_array_equal(batch["noisy_labels"][k], _multi_hot(r.noisy, 6))
                np.testing.assert_array_equal(batch["verified_labels"][k], _multi_hot(r.verified_pos, 6))
                mask = _multi_hot(list(r.verified_pos) + list(r.verified_neg), 6)
                np.testing.assert_array_equal(batch["verified_mask"][k], mask)
                # Unverified classes are masked out, never counted as negatives.
                unverified += int((mask == 0).sum()) if r.split == "clean" else 0
                assert batch["is_clean"][k] == (1.0 if r.split == "clean" else 0.0)
                if "true_labels" in batch:
                    np.testing.assert_array_equal(batch["true_labels"][k], _multi_hot(r.true, 6))
                    assert bool(batch["has_true"][k])
                seen += 1
    assert seen == 30 + 25 + 60
    assert unverified > 0


def test_images_match_the_records(toy_dataset):
    info, records = toy_dataset
    by_id = {r.id: r for r in records}
    # Toy images are 12x10 PNGs: at that size, resize is the identity.
    input_config = InputConfig(backbone="small_cnn", image_size=(12, 10))
    ds = pipeline.make_split_dataset(info, "val", 5, input_config=input_config, training=False, with_ids=True)
    for batch in ds:
        for k, image_id in enumerate(_ids(batch)):
            # RGB in [0, 255]: the backbone's scaling is the model's first layer.
            expected = by_id[image_id].image_array.astype(np.float32)
            np.testing.assert_allclose(batch["image"][k], expected, rtol=1e-6, atol=1e-5)


def test_training_never_reads_true_labels(tmp_path):
    info, _ = write_toy_dataset(tmp_path / "d", {"noisy": 20, "clean": 5}, with_true=True)
    batch = next(iter(pipeline.make_train_dataset(info, 10, "9:1", input_config=SMALL)))
    assert set(batch) == {"image", "noisy_labels", "verified_labels", "verified_mask", "is_clean"}


# === Epochs, sharding, order, determinism ===


def test_every_noisy_record_seen_exactly_once_per_epoch(toy_dataset):
    info, records = toy_dataset
    noisy_ids = {r.id for r in records if r.split == "noisy"}
    clean_ids = {r.id for r in records if r.split == "clean"}
    ds = pipeline.make_train_dataset(info, 10, "9:1", with_ids=True, input_config=SMALL)
    noisy_drawn, clean_drawn = [], []
    # 2 epochs of the 90 noisy records at 9 per batch.
    for batch in ds.take(2 * 90 // 9):
        ids = _ids(batch)
        noisy_drawn += ids[:9]
        clean_drawn += ids[9:]
    first, second = noisy_drawn[:90], noisy_drawn[90:]
    assert len(set(first)) == 90 and set(first) == noisy_ids
    assert len(set(second)) == 90 and set(second) == noisy_ids
    assert first != second  # reshuffled every epoch
    assert set(clean_drawn[:20]) == clean_ids and len(set(clean_drawn[:20])) == 20


@pytest.mark.parametrize("num_shards", [3, 1])
def test_two_input_pipelines_are_disjoint_and_cover_the_split(tmp_path, num_shards):
    # 3 shards: the files are sharded; 1 shard: the records are.
    info, records = write_toy_dataset(tmp_path / "d", {"noisy": 40, "clean": 10}, num_shards=num_shards)
    noisy_ids = {r.id for r in records if r.split == "noisy"}
    eval_sets, train_sets = [], []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        ds = pipeline.make_split_dataset(
            info, "noisy", 8, training=False, input_context=context, with_ids=True, input_config=SMALL
        )
        ids = [i for batch in ds for i in _ids(batch)]
        assert len(ids) == len(set(ids))
        eval_sets.append(set(ids))
        # Training: this pipeline's first epoch is a permutation of its shard
        # (deterministic order: otherwise the parallel parse may let a block
        # of the next epoch overtake one of this epoch).
        ds = pipeline.make_train_dataset(
            info, 20, "1:0", input_context=context, with_ids=True, input_config=SMALL_DETERMINISTIC
        )
        drawn = [i for batch in ds.take(4) for i in _ids(batch)][: len(ids)]
        assert set(drawn) == set(ids)
        train_sets.append(set(drawn))
    assert not eval_sets[0] & eval_sets[1]
    assert eval_sets[0] | eval_sets[1] == noisy_ids
    assert train_sets == eval_sets


def test_eval_yields_every_record_once_in_a_fixed_order(toy_dataset):
    info, records = toy_dataset
    val_ids = [r.id for r in records if r.split == "val"]
    ds = pipeline.make_split_dataset(info, "val", 5, training=False, with_ids=True, input_config=SMALL)
    assert ds.cardinality().numpy() == 3
    batches = [_ids(b) for b in ds]
    assert [len(b) for b in batches] == [5, 5, 2]
    ids = [i for b in batches for i in b]
    assert sorted(ids) == sorted(val_ids)
    # Round-robin shards read back round-robin: the writing order.
    assert ids == val_ids
    assert [i for b in ds for i in _ids(b)] == ids


def test_deterministic_mode_gives_identical_batches(toy_dataset):
    info, _ = toy_dataset

    def first_batches(seed):
        input_config = dataclasses.replace(SMALL, seed=seed, deterministic=True, augment=True, random_flip=True)
        ds = pipeline.make_train_dataset(info, 10, "9:1", input_config=input_config, with_ids=True)
        return [(b["id"].numpy(), b["image"].numpy()) for b in ds.take(4)]

    a, b, c = first_batches(3), first_batches(3), first_batches(4)
    for (ids_a, img_a), (ids_b, img_b) in zip(a, b):
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(img_a, img_b)
    assert any((ids_a != ids_c).any() for (ids_a, _), (ids_c, _) in zip(a, c))


# === Preprocessing ===


def test_preprocess_equals_keras_applications():
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 7, 5, 3)).astype(np.float32)
    for backbone, module in (
        ("inception_v3", keras.applications.inception_v3),
        ("resnet50", keras.applications.resnet50),
    ):
        expected = module.preprocess_input(images.copy())
        np.testing.assert_array_equal(scaling.preprocess(images, backbone), expected)
        layer = BackbonePreprocessing(backbone)
        np.testing.assert_array_equal(layer(images).numpy(), expected)
    np.testing.assert_allclose(scaling.preprocess(images, "small_cnn"), images / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="Received: backbone='vgg16'"):
        scaling.preprocess(images, "vgg16")
    assert sizes.default_image_size("inception_v3") == (299, 299)
    assert sizes.default_image_size("resnet50") == (224, 224)
    assert sizes.default_image_size("small_cnn") == (32, 32)


def _encode(array, fmt):
    buf = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(array).save(buf, format=fmt, **options)
    return buf.getvalue()


def test_png_and_jpeg_both_decode():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    png = preprocessing.decode_image(_encode(rgb, "PNG"))
    assert png.dtype == tf.float32
    np.testing.assert_array_equal(png, rgb.astype(np.float32))
    smooth = np.repeat(np.repeat(rgb[:2, :2], 8, axis=0), 8, axis=1)
    jpeg = preprocessing.decode_image(_encode(smooth, "JPEG"))
    assert jpeg.shape == (16, 16, 3)
    assert np.abs(jpeg.numpy() - smooth).mean() < 8
    gray = preprocessing.decode_image(_encode(rgb[..., 0], "PNG"), dtype=tf.uint8)
    assert gray.shape == (9, 11, 3) and gray.dtype == tf.uint8
    rgba = np.concatenate([rgb, np.full((9, 11, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(preprocessing.decode_image(_encode(rgba, "PNG")), rgb.astype(np.float32))
    resized = preprocessing.resize(png, (4, 6))
    assert resized.shape == (4, 6, 3) and resized.dtype == tf.float32


def test_augment_is_seeded_and_flip_is_optional():
    image = tf.constant(np.random.default_rng(2).uniform(0, 255, size=(10, 10, 3)), tf.float32)
    seed = tf.constant([1, 2], tf.int64)
    a = preprocessing.augment(image, seed, (8, 8))
    np.testing.assert_array_equal(a, preprocessing.augment(image, seed, (8, 8)))
    assert a.shape == (8, 8, 3)
    crops = {preprocessing.augment(image, tf.constant([1, k], tf.int64), (8, 8)).numpy().tobytes() for k in range(8)}
    assert len(crops) > 1
    # No crop room and no flip: the image itself; with flips, sometimes mirrored.
    for k in range(6):
        same = preprocessing.augment(image, tf.constant([0, k], tf.int64), (10, 10), crop_scale=1.0)
        np.testing.assert_array_equal(same, image)
    flipped = [
        preprocessing.augment(image, tf.constant([0, k], tf.int64), (10, 10), random_flip=True, crop_scale=1.0)
        for k in range(12)
    ]
    assert any(np.array_equal(f, image[:, ::-1]) for f in flipped)
    assert any(np.array_equal(f, image) for f in flipped)
