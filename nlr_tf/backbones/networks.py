"""Backbones: image -> pooled features.

`inception_v3` and `resnet50` come from `keras.applications` (global average
pooled, no top); `small_cnn` is a small convnet for the built-in benchmark
and the tests. Weights: "none" (random), "imagenet", or the path of a Keras
`.h5` weights file (for `small_cnn`: one written by
`nlr_tf.training.pretext`) (Keras-2 style files such as
`inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5` load through the
legacy HDF5 path; `.weights.h5` files through the Keras 3 one).

"imagenet" is the no-top file `keras.applications` uses, in the Keras cache
(`$KERAS_HOME/models/`, else `~/.keras/models/`): a file already there is
used as it is (no network, no hash check, so a copy brought from another
machine works); an absent one is downloaded there as `keras.applications`
does (`keras.utils.get_file`, same URL and hash), once: every later call and
run finds it in the cache. A failed download (no network, HTTP error, hash
mismatch) is one `ValueError` line with the reason, the full path the file
belongs at, and the alternative `--backbone_weights=/path/to/file.h5`; the
cache is left without the file.

When it happens: `nlr-train` resolves the weights in its configuration
checks, so the download (or its failure) comes before anything is written,
and building the backbone then finds the file; `nlr-extract-features`
downloads when it builds the backbone. Each worker of a multi-worker run
checks its own configuration, so workers that share no cache each download
once; workers sharing a cache may download at the same time, harmlessly:
each downloads into its own temporary directory next to the cache and moves
the checked file into place with one atomic rename (Keras' `get_file` alone
writes straight to the final name, where another process could read a
partial file), so the cache holds either no file or a whole one. A process
killed mid-download can leave a hidden `.<file name>.*` directory in the
cache, which nothing reads.

A frozen backbone (`trainable=False`) keeps its BatchNorm layers in
inference mode (Keras 3 semantics), so its features do not drift and can be
cached.
"""

import os
import shutil
import tempfile
import urllib.error
from typing import NamedTuple

import keras
import tensorflow as tf

from nlr_tf.backbones.scaling import BackbonePreprocessing
from nlr_tf.backbones.sizes import BACKBONES, DEFAULT_IMAGE_SIZE, MIN_IMAGE_SIZE, SMALL_CNN_WIDTH


class ImagenetFile(NamedTuple):
    name: str  # the file name in the Keras cache
    origin: str  # the URL keras.applications downloads it from
    file_hash: str  # md5, as keras.applications passes to get_file


# The no-top files keras.applications downloads, copied from the installed
# Keras (3.15) source: keras/src/applications/inception_v3.py
# (WEIGHTS_PATH_NO_TOP and the file_hash of its include_top=False get_file
# call) and keras/src/applications/resnet.py (BASE_WEIGHTS_PATH + the file
# name, WEIGHTS_HASHES["resnet50"][1]). Copied, not imported: keras.src is
# private and InceptionV3's hash is a literal in a function.
# tests/test_backbones.py checks them against the installed Keras.
_KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET_NOTOP = {
    "inception_v3": ImagenetFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPLICATIONS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
    "resnet50": ImagenetFile(
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _KERAS_APPLICATIONS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
}


def keras_cache_dir() -> str:
    """The Keras cache folder: $KERAS_HOME, else ~/.keras (/tmp/.keras if home is not writable).

    As `keras.src.backend.config`, but read at each call: Keras reads
    KERAS_HOME once, at import, and `get_file` defaults to that; the download
    passes this folder explicitly, so the file is looked for and written in
    the same place.
    """
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    home = os.path.expanduser("~")
    return os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")


def imagenet_weights_path(name: str) -> str:
    """Where Keras keeps the ImageNet (no top) weights of backbone `name`."""
    return os.path.join(os.path.expanduser(keras_cache_dir()), "models", IMAGENET_NOTOP[name].name)


def _short_reason(error: BaseException) -> str:
    """One short line on why a download failed: the network error under Keras' wrapper, else the message."""
    cause = error if isinstance(error, urllib.error.URLError) else error.__context__
    if isinstance(cause, urllib.error.HTTPError):
        return f"HTTP {cause.code} {cause.reason}"
    if isinstance(cause, urllib.error.URLError):
        return str(cause.reason)
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def download_imagenet_weights(name: str) -> str:
    """Downloads backbone `name`'s ImageNet (no top) weights into the Keras cache; returns their path.

    Raises:
        ValueError: one line, when the file cannot be downloaded or written.
    """
    file, path = IMAGENET_NOTOP[name], imagenet_weights_path(name)
    models_dir = os.path.dirname(path)

    def failed(reason: str) -> ValueError:
        return ValueError(
            f"ImageNet weights for {name}: download from {file.origin} failed ({reason}); put that file at {path} "
            f"or pass --backbone_weights=/path/to/{file.name}"
        )

    try:
        os.makedirs(models_dir, exist_ok=True)
        private_home = tempfile.mkdtemp(prefix=f".{file.name}.", dir=models_dir)
    except OSError as e:
        raise failed(f"cannot write to {models_dir}: {e.strerror or e}") from None
    try:
        # keras.applications' own call, into a private Keras home; get_file removes a partial download itself but
        # leaves a file whose hash does not match, which goes with the private home.
        downloaded = keras.utils.get_file(
            file.name, file.origin, cache_subdir="models", file_hash=file.file_hash, cache_dir=private_home
        )
        os.replace(downloaded, path)
    except Exception as e:  # any failure of the download (URLError, HTTPError, OSError, hash mismatch) is one line
        raise failed(_short_reason(e)) from None
    finally:
        shutil.rmtree(private_home, ignore_errors=True)
    return path


def resolve_weights(name: str, weights: str):
    """The weights file `build_backbone` loads (None: random), downloading the ImageNet file if it is not cached.

    Raises:
        ValueError: one line, for weights that cannot be had.
    """
    if weights in (None, "", "none"):
        return None
    if weights == "imagenet":
        if name not in IMAGENET_NOTOP:
            raise ValueError(f"{name} has no ImageNet weights; use none or a .weights.h5 file it saved")
        path = imagenet_weights_path(name)
        return path if os.path.isfile(path) else download_imagenet_weights(name)
    if not tf.io.gfile.exists(weights) or tf.io.gfile.isdir(weights):  # any TensorFlow filesystem
        raise ValueError(f"backbone weights file not found: {weights!r}")
    if not weights.endswith((".h5", ".hdf5")):
        raise ValueError(f"backbone weights must be a Keras .h5 file. Received: weights={weights}")
    return weights


def small_cnn(image_size: int, width: int = 16, name: str = "small_cnn") -> keras.Model:
    """Three stages of two conv-BN-ReLU blocks, max pooling between stages, then global average pooling.

    Takes images already scaled to [0, 1]. The default width (16, 32 and 64
    filters; 64-d features) learns the built-in benchmark's digits, and is
    small enough that every row of its reproduction trains to a plateau on
    two CPU cores (width 32, `small_cnn_wide`, with 128-d features, trains at
    about a quarter of the speed).
    """
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = inputs
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage}_{block}")(x)
            # Synchronized: batch statistics over the global batch, so moving
            # averages agree across replicas and workers. Momentum 0.9, not
            # Keras' 0.99: after a few hundred steps the 0.99 averages still
            # lag the fast-changing weights, and inference-mode scores drift
            # per class (measured on digits_mosaic GT after 400 steps: test
            # APall 0.64 with 0.99 against 0.98 with 0.9 and 0.998 with batch
            # statistics; mAP 0.955 / 0.997 / 0.998).
            x = keras.layers.BatchNormalization(synchronized=True, momentum=0.9, name=f"bn{stage}_{block}")(x)
            x = keras.layers.ReLU(name=f"relu{stage}_{block}")(x)
        if stage < 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name)


def _load_weights(base: keras.Model, path: str) -> None:
    """`base.load_weights(path)`, `path` on any TensorFlow filesystem: HDF5 reads local files only, so a remote
    file (`gs://...`) is copied to a local temporary file first."""
    if "://" not in path:
        base.load_weights(path)
        return
    local = tempfile.mkdtemp(prefix="nlr_weights_")
    try:
        copy = os.path.join(local, os.path.basename(path))
        tf.io.gfile.copy(path, copy)
        base.load_weights(copy)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def build_backbone(name: str, weights: str = "none", image_size: int = 0, trainable: bool = True) -> keras.Model:
    """Builds a backbone mapping RGB images [B, S, S, 3] in [0, 255] to features [B, F].

    Its first layer applies the backbone's own input scaling
    (`BackbonePreprocessing`).

    Args:
        name: str. One of `BACKBONES`.
        weights: str. "none", "imagenet" or a path to a Keras `.h5` file.
            Defaults to "none".
        image_size: int. Input side; 0 takes the backbone's default.
        trainable: bool. False freezes it (BatchNorm in inference mode).

    Returns:
        A functional `keras.Model` named "backbone".
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone; choose one of {', '.join(BACKBONES)}. Received: backbone={name}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[name]
    if image_size < MIN_IMAGE_SIZE[name]:
        raise ValueError(f"{name} needs images of at least {MIN_IMAGE_SIZE[name]} pixels. Received: {image_size}")
    path = resolve_weights(name, weights)
    if name in SMALL_CNN_WIDTH:
        base = small_cnn(image_size, SMALL_CNN_WIDTH[name], name=name)
    else:
        app = {"inception_v3": keras.applications.InceptionV3, "resnet50": keras.applications.ResNet50}[name]
        base = app(include_top=False, weights=None, input_shape=(image_size, image_size, 3), pooling="avg")
    if path is not None:
        _load_weights(base, path)
    images = keras.Input((image_size, image_size, 3), name="image")
    model = keras.Model(images, base(BackbonePreprocessing(name, name="preprocessing")(images)), name="backbone")
    model.trainable = trainable
    return model
