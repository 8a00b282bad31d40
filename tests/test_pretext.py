"""Rotation-prediction pretraining: the pretext task, what it reads, and the weights file it leaves."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from nlr_tf.backbones.networks import build_backbone
from nlr_tf.data.schema import load_dataset_info
from nlr_tf.training import pretext
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.trainer import train
from tfrecords_tools import digits_mosaic
from tfrecords_tools.writer import write_dataset


def test_rotated_batches_show_every_image_at_the_four_angles():
    images = tf.reshape(tf.range(2 * 3 * 3 * 1, dtype=tf.float32), (2, 3, 3, 1))
    rotated, angles = pretext.rotated_batches(images)
    assert rotated.shape == (8, 3, 3, 1)
    np.testing.assert_array_equal(angles.numpy(), [0, 0, 1, 1, 2, 2, 3, 3])
    for k in range(4):
        for i in range(2):
            np.testing.assert_array_equal(rotated[2 * k + i].numpy(), np.rot90(images[i].numpy(), k))
    with pytest.raises(ValueError, match="square"):
        pretext.rotated_batches(tf.zeros((1, 3, 4, 1)))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("digits") / "ml")
    write_dataset(digits_mosaic.convert("multi_label", 0.1, 0, 400, 60, 60), path, progress=False)
    return path


def test_rotation_pretraining_learns_the_task_and_its_weights_load_as_backbone_weights(digits, tmp_path):
    out = str(tmp_path / "rotation")
    config = pretext.RotationConfig(dataset=digits, output_dir=out, image_size=16, batch_size=40, steps=200)
    summary = pretext.pretrain_rotation(config)
    # Chance is 0.25; digit mosaics have an upright orientation.
    assert summary["rotation_accuracy"] > 0.6, summary
    with open(os.path.join(out, pretext.SUMMARY_FILE)) as f:
        assert json.load(f)["weights"] == os.path.join(out, pretext.WEIGHTS_FILE)

    loaded = build_backbone("small_cnn", weights=summary["weights"], image_size=16)
    fresh = build_backbone("small_cnn", image_size=16)
    images = tf.random.uniform((4, 16, 16, 3), 0, 255, seed=1)
    assert not np.allclose(loaded(images).numpy(), fresh(images).numpy(), atol=1e-3)
    again = build_backbone("small_cnn", weights=summary["weights"], image_size=16)
    np.testing.assert_allclose(loaded(images).numpy(), again(images).numpy(), atol=1e-6)

    # A noisy-label run starts from them through --backbone_weights.
    result = train(
        TrainConfig(
            method="noisy",
            dataset=digits,
            model_dir=str(tmp_path / "noisy"),
            image_size=16,
            backbone_weights=summary["weights"],
            batch_size=20,
            train_steps=2,
            checkpoint_steps=2,
        )
    )
    assert result["step"] == 2


def test_rotation_pretraining_never_reads_evaluation_splits(digits, tmp_path):
    for split in ("val", "test"):
        with pytest.raises(ValueError, match="training images only"):
            pretext.pretrain_rotation(pretext.RotationConfig(dataset=digits, output_dir=str(tmp_path), split=split))
    with pytest.raises(ValueError, match="absent"):
        pretext.pretrain_rotation(pretext.RotationConfig(dataset=digits, output_dir=str(tmp_path), split="clean_07"))
    assert load_dataset_info(digits).has_split("noisy")
