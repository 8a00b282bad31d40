"""Backbones: the real InceptionV3 / ResNet50 at their minimum sizes, weights offline."""

import os

import keras
import numpy as np
import pytest

from nlr_tf.models.backbones import build_backbone, imagenet_weights_path


def _saved_random(app, size, path):
    model = app(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
    model.save(path)  # a legacy HDF5 file, the layout of Keras' ImageNet weight files
    return model


@pytest.mark.parametrize("name,app,size", [
    ("inception_v3", keras.applications.InceptionV3, 75),
    ("resnet50", keras.applications.ResNet50, 32),
])
def test_h5_weights_load_offline_from_a_local_file(name, app, size, tmp_path, monkeypatch):
    path = str(tmp_path / f"{name}_notop.h5")
    reference = _saved_random(app, size, path)
    images = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    backbone = build_backbone(name, weights=path, image_size=size, trainable=False)
    assert backbone.output.shape[-1] == 2048
    np.testing.assert_allclose(backbone(images).numpy(), reference(images).numpy(), atol=1e-5)
    # "imagenet" reads Keras' cache and never downloads.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(ValueError, match="never downloaded"):
        build_backbone(name, weights="imagenet", image_size=size)
    os.makedirs(os.path.dirname(imagenet_weights_path(name)))
    os.rename(path, imagenet_weights_path(name))
    cached = build_backbone(name, weights="imagenet", image_size=size)
    np.testing.assert_allclose(cached(images).numpy(), reference(images).numpy(), atol=1e-5)


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="Received: backbone=vgg"):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="at least 75"):
        build_backbone("inception_v3", image_size=64)
    with pytest.raises(ValueError, match="not found"):
        build_backbone("resnet50", weights="/nope.h5", image_size=32)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_backbone("small_cnn", weights="imagenet")
