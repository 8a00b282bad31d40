"""Backbones: the real InceptionV3 / ResNet50 at their minimum sizes; ImageNet weights from the Keras cache or
downloaded there (here from a local file:// URL, or a download made to fail)."""

import hashlib
import inspect
import os
import urllib.error

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_util import run_cli
from conftest import write_toy_dataset
from keras.src.applications import inception_v3 as keras_inception_v3
from keras.src.applications import resnet as keras_resnet
from keras.src.utils import file_utils

from nlr_tf.backbones import networks as backbones
from nlr_tf.backbones.networks import IMAGENET_NOTOP, ImagenetFile, build_backbone, imagenet_weights_path
from nlr_tf.training.checks import ConfigError, check_config
from nlr_tf.training.config import TrainConfig


def _saved_random(app, size, path):
    model = app(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
    model.save(path)  # a legacy HDF5 file, the layout of Keras' ImageNet weight files
    return model


def _pixels(size):
    return np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype(np.float32)


def _md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache ($KERAS_HOME), and keras.utils.get_file spied on: its calls' arguments."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    calls, real = [], keras.utils.get_file

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(keras.utils, "get_file", spy)
    return home, calls


@pytest.mark.parametrize(
    "name,app,module,size",
    [
        ("inception_v3", keras.applications.InceptionV3, keras.applications.inception_v3, 75),
        ("resnet50", keras.applications.ResNet50, keras.applications.resnet50, 32),
    ],
)
def test_h5_weights_load_from_a_local_file_and_from_the_keras_cache(name, app, module, size, tmp_path, keras_home):
    path = str(tmp_path / f"{name}_notop.h5")
    reference = _saved_random(app, size, path)
    pixels = _pixels(size)
    backbone = build_backbone(name, weights=path, image_size=size, trainable=False)
    assert backbone.output.shape[-1] == 2048
    # The backbone takes RGB in [0, 255] and applies keras.applications' own preprocessing first.
    expected = reference(module.preprocess_input(pixels.copy())).numpy()
    np.testing.assert_allclose(backbone(pixels).numpy(), expected, atol=1e-4)
    # The same file on another TensorFlow filesystem (HDF5 reads local files only: copied to a local one first).
    remote = f"ram://weights/{name}_notop.h5"
    tf.io.gfile.copy(path, remote, overwrite=True)
    from_remote = build_backbone(name, weights=remote, image_size=size, trainable=False)
    np.testing.assert_allclose(from_remote(pixels).numpy(), expected, atol=1e-4)
    # "imagenet" with the file in Keras' cache reads it as it is: no download, no hash check.
    home, calls = keras_home
    assert imagenet_weights_path(name) == str(home / "models" / IMAGENET_NOTOP[name].name)
    os.makedirs(home / "models")
    os.rename(path, imagenet_weights_path(name))
    cached = build_backbone(name, weights="imagenet", image_size=size)
    np.testing.assert_allclose(cached(pixels).numpy(), expected, atol=1e-4)
    assert calls == []


def test_imagenet_files_are_keras_applications_own():
    """The URL and md5 keras.applications downloads the no-top files with (Keras 3.15 source)."""
    inception, resnet = IMAGENET_NOTOP["inception_v3"], IMAGENET_NOTOP["resnet50"]
    assert inception.origin == keras_inception_v3.WEIGHTS_PATH_NO_TOP
    assert f'file_hash="{inception.file_hash}"' in inspect.getsource(keras_inception_v3.InceptionV3)
    assert resnet.origin == keras_resnet.BASE_WEIGHTS_PATH + resnet.name
    assert resnet.file_hash == keras_resnet.WEIGHTS_HASHES["resnet50"][1]
    for file in (inception, resnet):
        assert file.origin.endswith("/" + file.name)


def _imagenet_config(dataset, tmp_path):
    return TrainConfig(
        method="noisy",
        dataset=dataset,
        model_dir=str(tmp_path / "run"),
        backbone="resnet50",
        backbone_weights="imagenet",
        image_size=32,
        batch_size=20,
    )


def test_absent_imagenet_weights_are_downloaded_once_as_keras_applications_does(tmp_path, keras_home, monkeypatch):
    """The real keras.utils.get_file, from a file:// URL: the configuration check downloads, the build reads."""
    home, calls = keras_home
    source = str(tmp_path / "served" / "resnet50_notop.h5")
    os.makedirs(os.path.dirname(source))
    reference = _saved_random(keras.applications.ResNet50, 32, source)
    served = ImagenetFile(IMAGENET_NOTOP["resnet50"].name, "file://" + source, _md5(source))
    monkeypatch.setitem(IMAGENET_NOTOP, "resnet50", served)
    info, _ = write_toy_dataset(tmp_path / "toy", {"noisy": 20, "clean": 20})
    config = _imagenet_config(info.path, tmp_path)
    check_config(config)
    assert not os.path.exists(config.model_dir)
    [(args, kwargs)] = calls
    assert args == (served.name, served.origin)
    assert kwargs["cache_subdir"] == "models" and kwargs["file_hash"] == served.file_hash
    # Into a private Keras home next to the cache, then moved into place whole.
    assert os.path.dirname(kwargs["cache_dir"]) == str(home / "models")
    assert sorted(os.listdir(home / "models")) == [served.name]
    backbone = build_backbone("resnet50", weights="imagenet", image_size=32)
    assert len(calls) == 1
    pixels = _pixels(32)
    expected = reference(keras.applications.resnet50.preprocess_input(pixels.copy())).numpy()
    np.testing.assert_allclose(backbone(pixels).numpy(), expected, atol=1e-4)


def _refuse_http(*args, **kwargs):
    raise urllib.error.HTTPError("https://example.invalid/", 404, "Not Found", {}, None)


@pytest.mark.parametrize("failure", ["unreachable", "http_error", "hash_mismatch", "unwritable_cache"])
def test_a_failed_download_is_one_line_naming_where_the_file_goes(failure, tmp_path, keras_home, monkeypatch):
    home, calls = keras_home
    file = IMAGENET_NOTOP["resnet50"]
    if failure == "unreachable":
        monkeypatch.setitem(IMAGENET_NOTOP, "resnet50", file._replace(origin=f"http://127.0.0.1:9/{file.name}"))
        reason = "Connection refused"
    elif failure == "http_error":
        monkeypatch.setattr(file_utils, "urlretrieve", _refuse_http)
        reason = "HTTP 404 Not Found"
    elif failure == "hash_mismatch":
        source = tmp_path / "truncated.h5"
        source.write_bytes(b"not the weights")
        monkeypatch.setitem(IMAGENET_NOTOP, "resnet50", file._replace(origin=f"file://{source}"))
        reason = "hash does not match"
    else:
        (tmp_path / "a_file").write_text("")
        home = tmp_path / "a_file" / "keras_home"
        monkeypatch.setenv("KERAS_HOME", str(home))
        reason = "cannot write to"
    with pytest.raises(ValueError) as raised:
        build_backbone("resnet50", weights="imagenet", image_size=32)
    message = str(raised.value)
    assert "\n" not in message and reason in message, message
    assert f"put that file at {home / 'models' / file.name} " in message
    assert f"--backbone_weights=/path/to/{file.name}" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no chained traceback
    assert len(calls) == (failure != "unwritable_cache")
    assert not os.path.isdir(home / "models") or os.listdir(home / "models") == []  # nothing partial left


def test_the_configuration_check_fails_on_a_failed_download(tmp_path, keras_home, monkeypatch):
    monkeypatch.setattr(file_utils, "urlretrieve", _refuse_http)
    info, _ = write_toy_dataset(tmp_path / "toy", {"noisy": 20, "clean": 20})
    config = _imagenet_config(info.path, tmp_path)
    with pytest.raises(ConfigError, match=r"download from .* failed \(HTTP 404 Not Found\); put that file at"):
        check_config(config)
    assert not os.path.exists(config.model_dir)


def test_extract_features_without_network_exits_with_one_line(tmp_path, monkeypatch):
    """The binary, its download sent to a closed local port (a proxy on 127.0.0.1:9), whatever the network."""
    info, _ = write_toy_dataset(tmp_path / "toy", {"noisy": 20})
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    output = tmp_path / "features"
    proc = run_cli(
        "extract_features",
        "--backbone=resnet50",
        "--backbone_weights=imagenet",
        "--image_size=32",
        f"--dataset={info.path}",
        f"--output_dir={output}",
        "--quiet",
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if "error:" in x]
    path = home / "models" / IMAGENET_NOTOP["resnet50"].name
    assert line.startswith("nlr-extract-features: error: ImageNet weights for resnet50: download from https://")
    assert f"put that file at {path} or pass --backbone_weights=/path/to/" in line
    assert not output.exists() and os.listdir(home / "models") == []


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="Received: backbone=vgg"):
        build_backbone("vgg")
    with pytest.raises(ValueError, match="at least 75"):
        build_backbone("inception_v3", image_size=64)
    with pytest.raises(ValueError, match="not found"):
        build_backbone("resnet50", weights="/nope.h5", image_size=32)
    with pytest.raises(ValueError, match="small_cnn has no ImageNet weights"):
        build_backbone("small_cnn", weights="imagenet")
    assert backbones.resolve_weights("resnet50", "none") is None
