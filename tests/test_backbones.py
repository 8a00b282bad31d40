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


@pytest.mark.parametrize(
    "name,app,module,size",
    [
        ("inception_v3", keras.applications.InceptionV3, keras.applications.inception_v3, 75),
        ("resnet50", keras.applications.ResNet50, keras.applications.resnet50, 32),
    ],
)
def test_h5_weights_load_offline_from_a_local_file(name, app, module, size, tmp_path, monkeypatch):
    path = str(tmp_path / f"{name}_notop.h5")
    reference = _saved_random(app, size, path)
    pixels = np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype(np.float32)
    backbone = build_backbone(name, weights=path, image_size=size, trainable=False)
    assert backbone.output.shape[-1] == 2048
    # The backbone takes RGB in [0, 255] and applies keras.applications' own preprocessing first.
    expected = reference(module.preprocess_input(pixels.copy())).numpy()
    np.testing.assert_allclose(backbone(pixels).numpy(), expected, atol=1e-4)
    images = pixels
    # "imagenet" reads Keras' cache and never downloads.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(ValueError, match="never downloaded"):
        build_backbone(name, weights="imagenet", image_size=size)
    os.makedirs(os.path.dirname(imagenet_weights_path(name)))
    os.rename(path, imagenet_weights_path(name))
    cached = build_backbone(name, weights="imagenet", image_size=size)
    np.testing.assert_allclose(cached(images).numpy(), expected, atol=1e-4)


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="Received: backbone=vgg"):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="at least 75"):
        build_backbone("inception_v3", image_size=64)
    with pytest.raises(ValueError, match="not found"):
        build_backbone("resnet50", weights="/nope.h5", image_size=32)
    with pytest.raises(ValueError, match="small_cnn has no ImageNet weights"):
        build_backbone("small_cnn", weights="imagenet")
